"""Ground-truth adapters for the disentanglement metrics: the shapes dataset (image and index mode), a labelled
random-access source (a fake in-memory one stands in for TFDS), and ground_truth_for's specs and errors."""

from __future__ import annotations

import numpy as np
import pytest

from edt_jax.data import Preprocess
from edt_jax.data import ground_truth as gtm
from edt_jax.data.ground_truth import LabelledGroundTruth, ShapesGroundTruth, ground_truth_for
from edt_jax.data.shapes import FACTOR_SIZES, ShapesDataset, ShapesSubset
from edt_jax.metrics import disentanglement as dis


def _replay_factors(sizes, num, seed):
    """SplitDiscreteStateSpace.sample_latent_factors by hand: one randint column per factor, in order."""
    rs = np.random.RandomState(seed)
    return np.stack([rs.randint(n, size=num) for n in sizes], axis=1), rs


def test_shapes_factors_are_drawn_as_disentanglement_lib():
    gt = ShapesGroundTruth()
    assert gt.num_factors == 7 and gt.factors_num_values == list(FACTOR_SIZES)
    assert gt.observation_shape == [32, 32, 3] and gt.num_items == 110_592
    rs = np.random.RandomState(3)
    factors = gt.sample_factors(50, rs)
    expected, replay = _replay_factors(FACTOR_SIZES, 50, 3)
    assert factors.dtype == np.int64
    np.testing.assert_array_equal(factors, expected)
    gt.sample_observations_from_factors(factors, rs)  # draws nothing
    assert rs.randint(10**9) == replay.randint(10**9)


def test_shapes_observations_are_the_pipeline_images_and_index_mode_matches():
    gt, gt_idx = ShapesGroundTruth(), ShapesGroundTruth(indices=True)
    dataset = ShapesDataset()
    factors = gt.sample_factors(6, np.random.RandomState(0))
    images = gt.sample_observations_from_factors(factors, None)
    assert images.dtype == np.float32 and images.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(images, dataset.images_for(factors).astype(np.float32) / 127.5 - 1.0)
    prep = Preprocess()
    index = gt_idx.sample_observations_from_factors(factors, None)
    assert index.dtype == np.int64 and index.shape == (6,) and gt_idx.observation_shape == []
    np.testing.assert_array_equal(index, dataset.factors_to_index(factors))
    for i, idx in enumerate(index):
        np.testing.assert_array_equal(dataset[int(idx)]["factors"], factors[i])
        np.testing.assert_array_equal(prep(dataset[int(idx)])["image"], images[i])
    np.testing.assert_array_equal(gt_idx.observations_at(index), images)
    # sample = factors then observations from the same RandomState, as disentanglement_lib's GroundTruthData
    f, idx = gt_idx.sample(4, np.random.RandomState(9))
    np.testing.assert_array_equal(f, _replay_factors(FACTOR_SIZES, 4, 9)[0])
    np.testing.assert_array_equal(idx, dataset.factors_to_index(f))


def test_shapes_subset_keeps_varying_factors_and_indexes_the_subset():
    subset = ShapesSubset(ShapesDataset(), {"scale": (3,), "x_position": (3, 4)})
    gt = ShapesGroundTruth(subset, indices=True)
    assert "scale" not in gt.factor_names and gt.num_factors == 6 and gt.num_items == len(subset)
    assert gt.factors_num_values == [3, 6, 4, 2, 8, 6]
    factors = gt.sample_factors(20, np.random.RandomState(1))
    index = gt.sample_observations_from_factors(factors, None)
    for f, i in zip(factors, index, strict=True):
        base = subset[int(i)]["factors"]
        assert base[3] == 3 and base[4] == (3, 4)[f[3]]
        np.testing.assert_array_equal(np.delete(base, [3, 4]), np.delete(f, 3))


def test_index_mode_gives_the_same_metrics_as_images():
    """The benchmark's shortcut: codes of every item once, indexed by the observations, changes nothing."""
    spec = "shapes:scale=3,orientation=0,y_position=2+5"  # 3 * 6 * 4 * 8 * 2 = 1152 images
    gt_img, gt_idx = ground_truth_for(spec), ground_truth_for(spec, indices=True)
    weights = np.random.default_rng(0).standard_normal((3 * 4, 3))

    def encode(images):  # a cheap deterministic "encoder": pooled colours -> 3 codes, float64
        pooled = images.reshape(len(images), 2, 16, 2, 16, 3).mean(axis=(2, 4)).reshape(len(images), -1)
        # elementwise, not BLAS: a matmul's rounding may depend on the batch size
        return np.tanh((pooled.astype(np.float64)[:, :, None] * weights).sum(axis=1))

    table = encode(gt_idx.observations_at(np.arange(gt_idx.num_items)))
    by_image = dis.mig(gt_img, encode, np.random.RandomState(4), num_train=300)
    by_index = dis.mig(gt_idx, lambda idx: table[idx], np.random.RandomState(4), num_train=300)
    assert by_image == by_index


def test_shapes_errors():
    gt = ShapesGroundTruth()
    with pytest.raises(ValueError, match="shape \\(n, 7\\)"):
        gt.sample_observations_from_factors(np.zeros((2, 6), np.int64), None)
    with pytest.raises(ValueError, match="'scale' = 4 is out of range"):
        gt.sample_observations_from_factors(np.array([[0, 0, 0, 4, 0, 0, 0]]), None)
    with pytest.raises(ValueError, match="index 110592 is out of range"):
        ShapesGroundTruth(indices=True).observations_at(np.array([110_592]))
    with pytest.raises(ValueError, match="ShapesDataset or ShapesSubset"):
        ShapesGroundTruth([1, 2, 3])


# ---- a labelled random-access source (TFDS-like) ---------------------------------------------------------------

SIZES = (2, 3, 4)
KEYS = ("label_a", "label_b", "label_c")


def _fake_source(seed=0, drop=None):
    """Every factor combination once, shuffled, as TFDS items: {"image": uint8 (4, 4, 1), "label_*": int64}."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SIZES], indexing="ij"), -1).reshape(-1, len(SIZES))
    grid = grid[np.random.default_rng(seed).permutation(len(grid))]
    if drop is not None:
        grid = np.delete(grid, drop, axis=0)
    return [{"image": np.full((4, 4, 1), 10 * (f[0] * 12 + f[1] * 4 + f[2]), np.uint8),
             **{k: np.int64(v) for k, v in zip(KEYS, f, strict=True)}} for f in grid]


def test_labelled_source_maps_factors_to_items():
    source = _fake_source()
    gt = LabelledGroundTruth(source, KEYS, SIZES)
    assert gt.factors_num_values == list(SIZES) and gt.observation_shape == [4, 4, 1]
    rs = np.random.RandomState(5)
    factors = gt.sample_factors(30, rs)
    expected, replay = _replay_factors(SIZES, 30, 5)
    np.testing.assert_array_equal(factors, expected)
    images = gt.sample_observations_from_factors(factors, rs)
    assert rs.randint(10**9) == replay.randint(10**9)
    np.testing.assert_array_equal(images[:, 0, 0, 0], (10 * (factors @ [12, 4, 1])).astype(np.float32) / 127.5 - 1)
    index = LabelledGroundTruth(source, KEYS, SIZES, indices=True).sample_observations_from_factors(factors, None)
    for f, i in zip(factors, index, strict=True):
        assert [source[int(i)][k] for k in KEYS] == list(f)
    # given labels = scanned labels; sizes inferred from them; dSprites-style 0/1 pixels
    labels = np.array([[item[k] for k in KEYS] for item in source])
    given = LabelledGroundTruth(source, KEYS, labels=labels, pixel_max=1)
    np.testing.assert_array_equal(given.factors_to_index(factors), index)
    assert given.factors_num_values == list(SIZES)
    np.testing.assert_array_equal(given.observations_at(index[:1])[0, 0, 0], [source[int(index[0])]["image"][0, 0, 0]
                                                                              * 2.0 - 1.0])


def test_labelled_source_errors():
    with pytest.raises(ValueError, match="no item has the factors \\(label_a=.*\\) \\(1 of 24 combinations missing\\)"):
        LabelledGroundTruth(_fake_source(drop=3), KEYS, SIZES)
    with pytest.raises(ValueError, match="'label_c' = 3 is out of range \\[0, 3\\)"):
        LabelledGroundTruth(_fake_source(), KEYS, (2, 3, 3))
    with pytest.raises(ValueError, match="labels must be integers of shape \\(24, 3\\)"):
        LabelledGroundTruth(_fake_source(), KEYS, SIZES, labels=np.zeros((24, 2), np.int64))


def test_ground_truth_for_specs(monkeypatch):
    assert isinstance(ground_truth_for("shapes"), ShapesGroundTruth)
    assert ground_truth_for("shapes:64").observation_shape == [64, 64, 3]
    opened = []

    def fake_open_tfds(name, split="train", data_dir=None):
        opened.append((name, split, data_dir))
        return _fake_source()

    monkeypatch.setattr(gtm, "open_tfds", fake_open_tfds)
    gt = ground_truth_for("tfds:dsprites:test", data_dir="/data", factor_keys=KEYS, indices=True)
    assert opened == [("dsprites", "test", "/data")]
    assert isinstance(gt, LabelledGroundTruth) and gt.indices and gt.pixel_max == 1  # TFDS dSprites is 0/1
    assert ground_truth_for("tfds:myset", factor_keys=KEYS).pixel_max == 255 and opened[-1][1] == "train"


@pytest.mark.parametrize("spec", ["mnist5k", "photos:32", "folder:/tmp/x", "tfds:mnist"])
def test_ground_truth_for_rejects_sources_without_factor_labels(spec):
    with pytest.raises(ValueError) as info:
        ground_truth_for(spec)
    message = str(info.value)
    assert "\n" not in message and repr(spec) in message
    assert "shapes[:64]" in message and "tfds:shapes3d" in message and "tfds:dsprites" in message
