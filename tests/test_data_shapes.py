"""Tests of the procedural shapes dataset: determinism, factor enumeration, rendering and input errors."""

from __future__ import annotations

import numpy as np
import pytest

from edt_jax.data.shapes import FACTOR_NAMES, ShapesDataset, ShapesSubset

SIZES = (32, 64)


@pytest.fixture(scope="module", params=SIZES, ids=lambda s: f"{s}px")
def ds(request: pytest.FixtureRequest) -> ShapesDataset:
    return ShapesDataset(request.param)


@pytest.fixture(scope="module")
def ds32() -> ShapesDataset:
    return ShapesDataset(32)


def test_metadata(ds: ShapesDataset) -> None:
    assert ds.factor_names == FACTOR_NAMES
    assert len(ds.factor_sizes) == len(FACTOR_NAMES) == 7
    assert all(isinstance(s, int) and s >= 2 for s in ds.factor_sizes)
    assert len(ds) == int(np.prod(ds.factor_sizes))
    assert 10**4 <= len(ds) <= 10**6
    assert ds.num_classes == ds.factor_sizes[0] >= 3


def test_deterministic_across_calls_and_instances(ds: ShapesDataset) -> None:
    other = ShapesDataset(ds.image_size)
    for index in np.random.default_rng(0).integers(0, len(ds), 16):
        first, second, third = ds[index], ds[index], other[int(index)]
        assert first["image"].tobytes() == second["image"].tobytes() == third["image"].tobytes()
        np.testing.assert_array_equal(first["factors"], third["factors"])


def test_index_factor_round_trip_covers_every_combination(ds32: ShapesDataset) -> None:
    n = len(ds32)
    factors = ds32.index_to_factors(np.arange(n))
    assert factors.shape == (n, 7) and factors.dtype == np.int32
    np.testing.assert_array_equal(ds32.factors_to_index(factors), np.arange(n))
    # Every combination exactly once: n distinct rows, each factor within its range.
    assert len(np.unique(factors, axis=0)) == n
    np.testing.assert_array_equal(factors.min(axis=0), 0)
    np.testing.assert_array_equal(factors.max(axis=0), np.array(ds32.factor_sizes) - 1)
    # Mixed radix, first factor most significant.
    np.testing.assert_array_equal(ds32.index_to_factors(1), [0, 0, 0, 0, 0, 0, 1])
    assert ds32.index_to_factors(n // ds32.factor_sizes[0])[0] == 1
    # Scalars and batched shapes.
    assert ds32.index_to_factors(np.int64(5)).shape == (7,)
    assert ds32.factors_to_index(ds32.index_to_factors(12345)) == 12345
    assert ds32.index_to_factors(np.arange(6).reshape(2, 3)).shape == (2, 3, 7)


def test_getitem_agrees_with_index_to_factors(ds: ShapesDataset) -> None:
    for index in [0, len(ds) - 1, *np.random.default_rng(1).integers(0, len(ds), 8).tolist()]:
        item = ds[np.int64(index)]
        assert set(item) == {"image", "label", "factors"}
        np.testing.assert_array_equal(item["factors"], ds.index_to_factors(index))
        assert item["factors"].dtype == np.int32 and item["factors"].shape == (7,)
        assert isinstance(item["label"], np.int32) and item["label"] == item["factors"][0]
        np.testing.assert_array_equal(item["image"], ds.render(item["factors"]))


def test_image_dtype_shape_range(ds: ShapesDataset) -> None:
    images = ds.images_for(ds.sample_factors(np.random.default_rng(2), 32))
    assert images.shape == (32, ds.image_size, ds.image_size, 3) and images.dtype == np.uint8
    assert images.min() < 64 and images.max() > 192  # dark backgrounds, bright objects: the range is used


@pytest.mark.parametrize("base_shape", [0, 2], ids=["square", "triangle"])
def test_every_factor_value_changes_the_image(ds32: ShapesDataset, base_shape: int) -> None:
    base = np.array([base_shape, 1, 2, 1, 3, 4, 2])
    reference = ds32.render(base)
    for k, name in enumerate(FACTOR_NAMES):
        for value in range(ds32.factor_sizes[k]):
            if value == base[k]:
                continue
            changed = base.copy()
            changed[k] = value
            diff = np.abs(ds32.render(changed).astype(int) - reference.astype(int))
            assert diff.max() >= 32, f"{name}={value} barely changes the image (max diff {diff.max()})"


def test_circle_is_rotation_invariant(ds32: ShapesDataset) -> None:
    """Documented: orientation has no effect on circles."""
    images = ds32.images_for([[1, 0, 0, 3, 2, 5, o] for o in range(ds32.factor_sizes[6])])
    assert (images == images[0]).all()


def test_anti_aliased_edges(ds: ShapesDataset) -> None:
    image = ds.render([2, 0, 1, 3, 4, 4, 1]).astype(int)
    bg = image[0, 0]
    fg = image[ds.image_size // 2, ds.image_size // 2]
    lo, hi = np.minimum(fg, bg), np.maximum(fg, bg)
    strictly_between = ((image > lo) & (image < hi)).any(axis=-1)
    assert strictly_between.sum() >= ds.image_size // 4


def test_objects_stand_out_and_stay_inside(ds: ShapesDataset) -> None:
    sizes = ds.factor_sizes
    # Every object/background hue pair: the object centre differs clearly from the background.
    for obj in range(sizes[1]):
        for bg in range(sizes[2]):
            image = ds.render([0, obj, bg, 0, 3, 3, 0]).astype(float)
            centre = image[int(0.43 * ds.image_size), int(0.43 * ds.image_size)]
            assert np.linalg.norm(centre - image[0, 0]) > 80, (obj, bg)
    # The largest scale at the extreme positions, any shape and orientation, never touches the border pixels.
    extremes = (0, sizes[4] - 1)
    factors = [[s, 0, 0, sizes[3] - 1, x, y, o] for s in range(sizes[0]) for o in range(sizes[6])
               for x in extremes for y in extremes]
    images = ds.images_for(factors)
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    assert (border == images[:, :1, :1]).all()


def test_sample_factors_and_images_for(ds32: ShapesDataset) -> None:
    factors = ds32.sample_factors(np.random.default_rng(3), 500)
    assert factors.shape == (500, 7) and factors.dtype == np.int32
    assert (factors >= 0).all() and (factors < np.array(ds32.factor_sizes)).all()
    assert (factors.max(axis=0) == np.array(ds32.factor_sizes) - 1).all()  # all values reachable
    np.testing.assert_array_equal(factors, ds32.sample_factors(np.random.default_rng(3), 500))
    images = ds32.images_for(factors[:4])
    assert images.shape == (4, 32, 32, 3)
    for factor, image in zip(factors[:4], images, strict=True):
        np.testing.assert_array_equal(image, ds32.render(factor))


def test_grain_source(ds32: ShapesDataset) -> None:
    grain = pytest.importorskip("grain")
    dataset = grain.MapDataset.source(ds32)
    assert len(dataset) == len(ds32)
    np.testing.assert_array_equal(dataset[7]["image"], ds32[7]["image"])


def _one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def test_bad_image_size() -> None:
    with pytest.raises(ValueError) as excinfo:
        ShapesDataset(48)
    message = _one_line(excinfo)
    assert "48" in message and "32" in message and "64" in message


def test_bad_index(ds32: ShapesDataset) -> None:
    for index in (-1, len(ds32), np.int64(len(ds32) + 5)):
        with pytest.raises(IndexError) as excinfo:
            ds32[index]
        message = _one_line(excinfo)
        assert str(int(index)) in message and str(len(ds32)) in message
    with pytest.raises(IndexError):
        ds32.index_to_factors(np.array([0, len(ds32)]))


def test_bad_factors(ds32: ShapesDataset) -> None:
    good = [0, 1, 2, 1, 3, 4, 2]
    for k, name in enumerate(FACTOR_NAMES):
        for value in (-1, ds32.factor_sizes[k]):
            bad = list(good)
            bad[k] = value
            for call in (ds32.render, ds32.factors_to_index, lambda f: ds32.images_for([f])):
                with pytest.raises(ValueError) as excinfo:
                    call(bad)
                assert name in _one_line(excinfo)
    with pytest.raises(ValueError):
        ds32.render(good[:6])
    with pytest.raises(ValueError):
        ds32.render([0.0] * 7)


def test_subset_holds_exactly_the_listed_factor_values(ds32: ShapesDataset) -> None:
    subset = ShapesSubset(ds32, {"background_hue": (0,), "scale": (3,), "x_position": (4, 3), "y_position": [4]})
    assert len(subset) == 3 * 6 * 2 * 6 and subset.image_size == 32 and subset.num_classes == 3
    factors = np.stack([subset[i]["factors"] for i in range(len(subset))])
    assert len({tuple(f) for f in factors}) == len(subset)  # every combination once
    for k, name in enumerate(FACTOR_NAMES):
        expected = {"background_hue": {0}, "scale": {3}, "x_position": {3, 4}, "y_position": {4}}.get(name)
        assert set(factors[:, k].tolist()) == (expected or set(range(ds32.factor_sizes[k])))
    item = subset[7]
    np.testing.assert_array_equal(item["image"], ds32.render(item["factors"]))
    assert item["label"] == item["factors"][0]
    assert np.all(np.diff(subset.indices) > 0)  # the base dataset's order


def test_bad_subsets(ds32: ShapesDataset) -> None:
    for values, words in [({"colour": (0,)}, ("colour", "object_hue")), ({"scale": (4,)}, ("scale", "[0, 4)")),
                          ({"x_position": ()}, ("x_position", "one or more"))]:
        with pytest.raises(ValueError) as excinfo:
            ShapesSubset(ds32, values)
        assert all(word in _one_line(excinfo) for word in words)
    subset = ShapesSubset(ds32, {"shape": (1,)})
    with pytest.raises(IndexError) as excinfo:
        subset[len(subset)]
    assert str(len(subset)) in _one_line(excinfo)
