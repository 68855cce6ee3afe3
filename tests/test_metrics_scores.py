"""Inception Score and improved precision/recall on cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from edt_jax.metrics import inception_score, precision_recall
from edt_jax.metrics.scores import knn_radii


def _classic_inception_score(logits: np.ndarray, splits: int) -> tuple[float, float]:
    """The Salimans et al. formula written on probabilities."""
    preds = np.exp(logits - logits.max(axis=1, keepdims=True))
    preds /= preds.sum(axis=1, keepdims=True)
    n, scores = len(preds), []
    for i in range(splits):
        part = preds[i * n // splits:(i + 1) * n // splits]
        kl = part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True)))
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def test_inception_score_uniform_is_one():
    mean, std = inception_score(np.zeros((100, 1008)), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_distinct_classes():
    classes = 10
    logits = np.zeros((200, 1008))
    logits[np.arange(200), np.arange(200) % classes] = 100.0  # saturated: p(y|x) is one-hot to float64
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(classes, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_matches_classic_formula():
    logits = np.random.default_rng(0).standard_normal((90, 1008)) * 3
    ours = inception_score(logits.astype(np.float32), splits=9)
    reference = _classic_inception_score(logits.astype(np.float32).astype(np.float64), splits=9)
    np.testing.assert_allclose(ours, reference, rtol=1e-10)


def test_inception_score_errors():
    with pytest.raises(ValueError, match=r"N >= splits >= 1; got shape \(5, 8\) and splits=10"):
        inception_score(np.zeros((5, 8)))


def test_precision_recall_identical_sets():
    features = np.random.default_rng(1).standard_normal((60, 16))
    assert precision_recall(features, features, k=3) == (1.0, 1.0)


def test_precision_recall_disjoint_sets():
    rng = np.random.default_rng(2)
    real = rng.standard_normal((40, 8))
    fake = rng.standard_normal((30, 8)) + 100.0
    assert precision_recall(real, fake, k=3) == (0.0, 0.0)


def test_precision_recall_hand_checked():
    # Reals 0, 1, 2, 3 (k=1 radii all 1: the real manifold is [-1, 4]).
    # Fakes -3, 0.5, 2.5, 10 with k=1 radii 3.5, 2, 2, 7.5: balls [-6.5, 0.5], [-1.5, 2.5], [0.5, 4.5],
    # [2.5, 17.5] cover every real. Precision: 0.5 and 2.5 are inside, -3 and 10 are not.
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[-3.0], [0.5], [2.5], [10.0]])
    np.testing.assert_allclose(knn_radii(fake, k=1), [3.5**2, 2.0**2, 2.0**2, 7.5**2])
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)
    assert precision_recall(fake, real, k=1) == (1.0, 0.5)


def test_precision_recall_batching_and_brute_force():
    rng = np.random.default_rng(3)
    real, fake = rng.standard_normal((50, 5)), rng.standard_normal((45, 5)) * 1.3 + 0.4

    def brute(a, b, k):
        radii = np.sort(np.linalg.norm(a[:, None] - a[None], axis=-1), axis=1)[:, k]
        return float((np.linalg.norm(b[:, None] - a[None], axis=-1) <= radii[None]).any(axis=1).mean())

    expected = (brute(real, fake, 3), brute(fake, real, 3))
    assert 0.0 < expected[0] < 1.0 and 0.0 < expected[1] < 1.0
    assert precision_recall(real, fake, k=3, batch_size=7) == pytest.approx(expected, abs=1e-12)
    assert precision_recall(real, fake, k=3) == pytest.approx(expected, abs=1e-12)


def test_precision_recall_errors():
    with pytest.raises(ValueError, match="k=3 needs 1 <= k < the number of points in each set; got 3 real"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))
    with pytest.raises(ValueError, match=r"same D; got \(4, 2\) and \(4, 3\)"):
        precision_recall(np.zeros((4, 2)), np.zeros((4, 3)), k=1)
