"""photos: patches of the colour photos shipped inside scikit-image, split by photo."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("skimage", reason="the photos source needs scikit-image (pip install 'edt_jax[restoration]')")

from edt_jax.data import create_dataset, create_source, photos  # noqa: E402
from edt_jax.data.photos import PHOTOS, SPLITS, PhotoPatches, load_photo  # noqa: E402


def test_records_shapes_dtypes_and_positions():
    source = create_source("photos:32:train")
    assert isinstance(source, PhotoPatches) and source.size == 32 and source.split == "train"
    assert len(source) > 1000 and len(source.positions) == len(source)
    for i in (0, len(source) // 2, len(source) - 1):
        record = source[i]
        assert set(record) == {"image", "label"}
        assert record["image"].shape == (32, 32, 3) and record["image"].dtype == np.uint8
        assert isinstance(record["label"], np.int32)
        top, left = source.positions[i]
        photo = load_photo(PHOTOS[record["label"]])
        np.testing.assert_array_equal(record["image"], photo[top:top + 32, left:left + 32])
        # No kept patch is near-flat.
        assert record["image"].reshape(-1, 3).std(axis=0).max() >= photos.MIN_STD
    # Records are copies: changing one leaves the read-only cache intact.
    record = source[0]
    record["image"][:] = 0
    assert source[0]["image"].any()
    assert not load_photo(PHOTOS[0]).flags.writeable


def test_defaults_sizes_and_flat_patches_dropped():
    source = create_source("photos")  # size 64, split from create_source's split argument
    assert source.size == 64 and source.split == "train" and source[0]["image"].shape == (64, 64, 3)
    assert create_source("photos:test").split == "test"
    assert create_source("photos:64", split="test").split == "test"
    assert create_source("photos:32:test", split="train").split == "test"  # the spec's split wins
    # At 32x32 rocket's sky gives flat patches, which are dropped from its full grid.
    rocket = load_photo("rocket.jpg")
    grid = ((rocket.shape[0] - 32) // 16 + 1) * ((rocket.shape[1] - 32) // 16 + 1)
    train = create_source("photos:32:train")
    labels = np.array([train[i]["label"] for i in range(len(train))])
    assert 0 < (labels == PHOTOS.index("rocket.jpg")).sum() < grid
    assert len(PhotoPatches(32, "train", min_std=0.0)) > len(train)


def test_deterministic():
    first = PhotoPatches(32, "test")
    a = np.stack([first[i]["image"] for i in range(len(first))])
    photos._patches.cache_clear()
    photos.load_photo.cache_clear()
    second = PhotoPatches(32, "test")
    np.testing.assert_array_equal(np.stack([second[i]["image"] for i in range(len(second))]), a)
    np.testing.assert_array_equal(second.positions, first.positions)


def test_train_and_test_photos_are_disjoint():
    assert not set(SPLITS["train"]) & set(SPLITS["test"])
    for size in (32, 64):
        for split in ("train", "test"):
            source = create_source(f"photos:{size}:{split}")
            assert {int(source[i]["label"]) for i in range(len(source))} == set(SPLITS[split])
    # The stereo pair (near-duplicates) stays on one side.
    pair = {PHOTOS.index("motorcycle_left.png"), PHOTOS.index("motorcycle_right.png")}
    assert pair <= set(SPLITS["train"])


@pytest.mark.parametrize("spec, split, message", [
    ("photos:big", "train", r"unknown data source 'photos:big'; the photos source is photos\[:<size>\]\[:<split>\]"
                            r" with an integer size and a split in train, test"),
    ("photos:64:val", "train", r"unknown data source 'photos:64:val'"),
    ("photos:64:test:x", "train", r"unknown data source 'photos:64:test:x'"),
    ("photos:test:64", "train", r"unknown data source 'photos:test:64'"),
    ("photos:4", "train", r"photos patch size must be an integer >= 8, got 4"),
    ("photos:64", "validation", r"unknown photos split 'validation'; expected one of 'train', 'test'"),
    ("photos:512:test", "train", r"photos: no 512x512 patch of the test photos"),
])
def test_bad_specs_are_one_line_errors(spec, split, message):
    with pytest.raises(ValueError, match=message) as info:
        create_source(spec, split=split)
    assert "\n" not in str(info.value)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"downscale must be an integer >= 1, got 0"):
        PhotoPatches(32, downscale=0)
    with pytest.raises(ValueError, match=r"unknown photo 'lena.png'"):
        load_photo("lena.png")
    assert load_photo("astronaut.png", 4).shape == (128, 128, 3)


def test_missing_scikit_image_is_a_one_line_import_error(monkeypatch):
    photos._patches.cache_clear()
    photos.load_photo.cache_clear()
    monkeypatch.setitem(sys.modules, "skimage", None)  # makes `import skimage...` raise ImportError
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    try:
        with pytest.raises(ImportError, match=r"pip install 'edt_jax\[restoration\]'") as info:
            create_source("photos:32:test")
        assert "\n" not in str(info.value)
    finally:
        photos._patches.cache_clear()
        photos.load_photo.cache_clear()


def test_create_dataset_yields_batches():
    batch = next(iter(create_dataset(create_source("photos:32:train"), 4, seed=0)))
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.float32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["label"].shape == (4,) and set(batch["label"].tolist()) <= set(SPLITS["train"])
