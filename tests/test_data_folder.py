"""edt_jax.data.folder: image folders and latent arrays -> ArrayRecord TFDS datasets, written and read without TF."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from edt_jax.data.folder import build_image_folder_dataset, build_latent_dataset


def _read(name, data_dir, **kwargs):
    return tfds.data_source(name, split="train", data_dir=os.fspath(data_dir), download=False, **kwargs)


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def class_folder(tmp_path):
    """2 classes x 3 RGB PNGs of different sizes; returns (folder, expected images in record order)."""
    rng = np.random.default_rng(0)
    folder, expected = tmp_path / "pets", []
    for cls in ("dog", "cat"):  # written unsorted: ids must follow the sorted names (cat=0, dog=1)
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            image = rng.integers(0, 256, (5 + i, 7, 3), dtype=np.uint8)
            Image.fromarray(image).save(folder / cls / f"{i}.png")
            expected.append((cls, image))
    expected.sort(key=lambda item: item[0])  # cat before dog, files in name order within a class
    return folder, expected


def test_labelled_folder_round_trip(class_folder, tmp_path):
    folder, expected = class_folder
    data_dir = tmp_path / "tfds"
    stray = set(Path(tempfile.gettempdir()).glob("tmp*tfds"))
    name = build_image_folder_dataset(folder, data_dir)
    assert name == "pets"
    assert set(Path(tempfile.gettempdir()).glob("tmp*tfds")) <= stray  # no empty folder left in /tmp
    source = _read(name, data_dir)
    assert len(source) == 6
    for i, (cls, image) in enumerate(expected):
        record = source[i]
        assert record["image"].dtype == np.uint8
        np.testing.assert_array_equal(record["image"], image)
        assert record["label"] == ["cat", "dog"].index(cls)
    features = source.dataset_info.features
    assert features["label"].names == ["cat", "dog"]
    assert features["image"].shape == (None, None, 3)
    # The PNG files are stored byte-for-byte, not re-encoded.
    raw = _read(name, data_dir, decoders={"image": tfds.decode.SkipDecoding()})
    assert raw[0]["image"] == (folder / "cat" / "0.png").read_bytes()
    # Also readable as a plain TFDS directory; no scratch or downloads/ folders are left behind.
    builder = tfds.builder_from_directory(os.fspath(data_dir / name / "1.0.0"))
    assert builder.info.splits["train"].num_examples == 6
    assert sorted(os.listdir(data_dir)) == [name]


def test_flat_folder_is_unlabelled_and_grey_stays_one_channel(tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (6, 4), dtype=np.uint8) for _ in range(3)]
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"img{i}.PNG")  # upper-case extension
    (folder / "notes.txt").write_text("not an image")
    name = build_image_folder_dataset(folder, tmp_path / "out", name="flat")
    source = _read(name, tmp_path / "out")
    assert len(source) == 3
    assert set(source[0]) == {"image"}
    assert source.dataset_info.features["image"].shape == (6, 4, 1)  # all alike: a fixed shape
    for i, image in enumerate(images):
        np.testing.assert_array_equal(source[i]["image"], image[..., None])


def test_other_formats_are_converted_and_resizing(tmp_path):
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (6, 6, 4), dtype=np.uint8)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(rgba).save(folder / "a.png")
    Image.fromarray(rgb).save(folder / "b.bmp")
    Image.fromarray(rgb).save(folder / "c.webp", lossless=True)
    Image.fromarray(rgb).save(folder / "d.jpeg", quality=90)
    source = _read(build_image_folder_dataset(folder, tmp_path / "out", name="mixed"), tmp_path / "out")
    np.testing.assert_array_equal(source[0]["image"], rgba[..., :3])  # alpha dropped
    np.testing.assert_array_equal(source[1]["image"], rgb)
    np.testing.assert_array_equal(source[2]["image"], rgb)
    np.testing.assert_array_equal(source[3]["image"], np.asarray(Image.open(folder / "d.jpeg")))  # JPEG kept as is

    resized = build_image_folder_dataset(folder, tmp_path / "out", name="small", image_size=4)
    source = _read(resized, tmp_path / "out")
    assert source.dataset_info.features["image"].shape == (4, 4, 3)
    assert all(source[i]["image"].shape == (4, 4, 3) for i in range(4))


def test_rebuild_reuses_same_inputs_refuses_changed_ones_and_overwrites(class_folder, tmp_path):
    folder, _ = class_folder
    data_dir = tmp_path / "tfds"
    name = build_image_folder_dataset(folder, data_dir)
    info_file = data_dir / name / "1.0.0" / "dataset_info.json"
    stamp = info_file.stat().st_mtime_ns
    assert build_image_folder_dataset(folder, data_dir) == name  # same files and settings: reused as is
    assert info_file.stat().st_mtime_ns == stamp
    new = np.zeros((3, 3, 3), np.uint8)
    Image.fromarray(new).save(folder / "dog" / "9.png")
    with pytest.raises(FileExistsError) as excinfo:
        build_image_folder_dataset(folder, data_dir)
    assert str(data_dir / name / "1.0.0") in _one_line(excinfo) and "overwrite=True" in str(excinfo.value)
    with pytest.raises(FileExistsError):
        build_image_folder_dataset(folder, data_dir, split="test")  # one build = one split, never mixed in
    build_image_folder_dataset(folder, data_dir, overwrite=True)
    source = _read(name, data_dir)
    assert len(source) == 7
    np.testing.assert_array_equal(source[6]["image"], new)


def test_latents_round_trip_bitwise(tmp_path):
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((5, 4, 4, 3)).astype(np.float32)
    latents[0, 0, 0, :] = [-0.0, np.float32(1e-45), np.finfo(np.float32).max]  # sign of zero, subnormal, extreme
    labels = np.array([3, 0, 999, 1, 2], dtype=np.int32)
    name = build_latent_dataset(latents, labels, tmp_path, "lat")
    source = _read(name, tmp_path)
    assert len(source) == 5
    for i in range(5):
        record = source[i]
        assert record["latent"].dtype == np.float32 and record["latent"].shape == (4, 4, 3)
        np.testing.assert_array_equal(record["latent"].view(np.uint32), latents[i].view(np.uint32))
        assert record["label"] == labels[i]

    unlabelled = build_latent_dataset(latents[:2], None, tmp_path, "lat_nolabel")
    source = _read(unlabelled, tmp_path)
    assert len(source) == 2 and set(source[1]) == {"latent"}
    np.testing.assert_array_equal(source[1]["latent"], latents[1])
    with pytest.raises(FileExistsError):
        build_latent_dataset(latents, None, tmp_path, "lat")  # same name, other data


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError) as excinfo:
        build_image_folder_dataset(tmp_path / "nope", tmp_path / "out")
    assert str(tmp_path / "nope") in _one_line(excinfo)


def test_class_folders_mixed_with_loose_images(class_folder, tmp_path):
    folder, _ = class_folder
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(folder / "stray.png")
    with pytest.raises(ValueError, match="stray.png") as excinfo:
        build_image_folder_dataset(folder, tmp_path / "out")
    assert str(folder) in _one_line(excinfo)


def test_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No images") as excinfo:
        build_image_folder_dataset(tmp_path / "empty", tmp_path / "out")
    assert str(tmp_path / "empty") in _one_line(excinfo)
    (tmp_path / "classes" / "a").mkdir(parents=True)
    (tmp_path / "classes" / "a" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="No images"):
        build_image_folder_dataset(tmp_path / "classes", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"not an image at all", "truncated"])
def test_corrupt_image_names_the_file(class_folder, tmp_path, content):
    folder, _ = class_folder
    bad = folder / "dog" / "bad.png"
    if content == "truncated":
        content = (folder / "dog" / "0.png").read_bytes()[:60]
    bad.write_bytes(content)
    with pytest.raises(ValueError) as excinfo:
        build_image_folder_dataset(folder, tmp_path / "out")
    assert str(bad) in _one_line(excinfo)
    assert not (tmp_path / "out" / "pets").exists()  # checked before anything is written


def test_bad_latent_arguments(tmp_path):
    latents = np.zeros((4, 2, 2, 1), np.float32)
    with pytest.raises(ValueError) as excinfo:
        build_latent_dataset(latents, np.zeros(3, np.int64), tmp_path, "lat")
    assert "(4,)" in _one_line(excinfo) and "(3,)" in str(excinfo.value)
    with pytest.raises(ValueError, match="integers"):
        build_latent_dataset(latents, np.zeros(4, np.float32), tmp_path, "lat")
    with pytest.raises(ValueError, match="registered TFDS dataset"):
        build_latent_dataset(latents, None, tmp_path, "mnist")
    with pytest.raises(ValueError, match="Invalid dataset name"):
        build_latent_dataset(latents, None, tmp_path, "My Latents")


def test_no_tensorflow_imported():
    assert "tensorflow" not in sys.modules
