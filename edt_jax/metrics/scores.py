"""Inception Score and improved precision/recall (Kynkaanniemi et al. 2019), in float64 numpy.

Both take what the FID Inception produces: the Inception Score its 1008-way logits
(``net.apply(variables, x, method="pool3_and_logits")``), precision/recall its pool3 features.
"""

from __future__ import annotations

import numpy as np


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    peak = a.max(axis=axis, keepdims=True)
    return np.squeeze(peak, axis) + np.log(np.exp(a - peak).sum(axis=axis))


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """Inception Score ``exp(E_x KL(p(y|x) || p(y)))``: mean and std over ``splits`` equal parts.

    Args:
      logits: classifier logits (N, C) (C = 1008 for the FID Inception), N >= splits.
      splits: number of consecutive parts, each scored with its own marginal p(y) (the classic
        protocol of Salimans et al. uses 10 parts of 5,000 samples).

    Computed from log-softmax in float64, so saturated predictions (p = 0 for most classes) give no
    ``0 * log 0`` NaNs.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] < splits or splits < 1:
        raise ValueError(f"inception_score needs logits (N, C) with N >= splits >= 1; got shape {logits.shape} "
                         f"and splits={splits}")
    log_p = _log_softmax(logits)
    n = log_p.shape[0]
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits:(i + 1) * n // splits]
        # log of the part's marginal p(y) = mean_x p(y|x), taken in log space.
        log_marginal = _logsumexp(part, axis=0) - np.log(part.shape[0])
        kl = (np.exp(part) * (part - log_marginal)).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _sq_distances(a: np.ndarray, b: np.ndarray, b_norms: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (len(a), len(b)), clipped at 0 against round-off."""
    return np.maximum(_sq_norms(a)[:, None] - 2.0 * (a @ b.T) + b_norms[None, :], 0.0)


def knn_radii(features: np.ndarray, k: int, batch_size: int = 1024) -> np.ndarray:
    """Squared distance (N,) of each point to its k-th nearest other point of the same set."""
    norms = _sq_norms(features)
    radii = np.empty(features.shape[0])
    for start in range(0, features.shape[0], batch_size):
        d = _sq_distances(features[start:start + batch_size], features, norms)
        # Column k of the partition: the point itself sits at distance 0 in column 0.
        radii[start:start + batch_size] = np.partition(d, k, axis=1)[:, k]
    return radii


def _coverage(queries: np.ndarray, support: np.ndarray, support_radii: np.ndarray, batch_size: int) -> float:
    """Fraction of ``queries`` inside at least one ball (centre ``support[j]``, squared radius
    ``support_radii[j]``)."""
    norms = _sq_norms(support)
    inside = 0
    for start in range(0, queries.shape[0], batch_size):
        d = _sq_distances(queries[start:start + batch_size], support, norms)
        inside += int((d <= support_radii[None, :]).any(axis=1).sum())
    return inside / queries.shape[0]


def precision_recall(real_features, fake_features, k: int = 3, batch_size: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of fake against real features.

    Each set's manifold is the union of balls around its points with radius the distance to the
    k-th nearest neighbour within the set. Precision = fraction of fake points inside the real
    manifold; recall = fraction of real points inside the fake manifold.

    Args:
      real_features: (N, D); fake_features: (M, D); both need more than k points.
      k: neighbourhood size (3 in the paper and the ADM evaluator).
      batch_size: rows of the distance matrix held at once (memory ~ batch_size x max(N, M) float64).
    """
    real = np.asarray(real_features, dtype=np.float64)
    fake = np.asarray(fake_features, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"precision_recall needs features (N, D) and (M, D) of the same D; got {real.shape} and "
                         f"{fake.shape}")
    if k < 1 or min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(f"k={k} needs 1 <= k < the number of points in each set; got {real.shape[0]} real and "
                         f"{fake.shape[0]} fake")
    real_radii = knn_radii(real, k, batch_size)
    fake_radii = knn_radii(fake, k, batch_size)
    precision = _coverage(fake, real, real_radii, batch_size)
    recall = _coverage(real, fake, fake_radii, batch_size)
    return precision, recall
