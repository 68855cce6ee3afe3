"""edt_jax.data.tfds_source.open_tfds: random access to prepared TFDS datasets, no TF, no downloads."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from edt_jax.data.folder import build_latent_dataset
from edt_jax.data.tfds_source import open_tfds


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_mocked_dataset_records(name, shape, tmp_path):
    # USE_CODE: random examples generated from the builder's features; no files, no network, TF not needed.
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        source = open_tfds(name, split="train", data_dir=str(tmp_path))
        assert len(source) == 12
        for i in (0, 11):
            record = source[i]
            assert record["image"].dtype == np.uint8 and record["image"].shape == shape
            assert np.issubdtype(record["label"].dtype, np.integer) and 0 <= record["label"] < 10
    assert not any(tmp_path.iterdir())


def test_unprepared_dataset_is_one_line_naming_the_dir(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError) as excinfo:
        open_tfds("mnist", data_dir=str(missing))
    message = _one_line(excinfo)
    assert str(missing / "mnist" / "3.0.1") in message  # the exact directory TFDS looked in
    assert "tfds build mnist" in message and "array_record" in message
    assert not missing.exists()  # nothing created, nothing downloaded


def test_unknown_dataset_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError) as excinfo:
        open_tfds("my_own_dataset", data_dir=tmp_path)
    message = _one_line(excinfo)
    assert "my_own_dataset" in message and str(tmp_path / "my_own_dataset") in message
    assert "build_image_folder_dataset" in message  # `tfds build` cannot make an unregistered dataset


def test_malformed_name_is_one_line(tmp_path):
    with pytest.raises(ValueError) as excinfo:
        open_tfds("Not a name!", data_dir=str(tmp_path))
    assert "Not a name!" in _one_line(excinfo)


@pytest.fixture
def prepared(tmp_path):
    """A real prepared ArrayRecord dataset (written by edt_jax.data.folder) with a 'train' split of 6 records."""
    latents = np.arange(6 * 2 * 2 * 1, dtype=np.float32).reshape(6, 2, 2, 1)
    return build_latent_dataset(latents, np.arange(6) % 3, tmp_path, "tiny"), tmp_path, latents


def test_prepared_dataset_and_split_slices(prepared):
    name, data_dir, latents = prepared
    source = open_tfds(name, split="train", data_dir=data_dir)
    assert len(source) == 6
    np.testing.assert_array_equal(source[5]["latent"], latents[5])
    assert source[4]["label"] == 1
    assert len(open_tfds(name, split="train[:4]", data_dir=str(data_dir))) == 4


@pytest.mark.parametrize("split", ["test", "train+test", "validation[:10%]"])
def test_unknown_split_lists_available_ones(prepared, split):
    name, data_dir, _ = prepared
    with pytest.raises(ValueError) as excinfo:
        open_tfds(name, split=split, data_dir=str(data_dir))
    message = _one_line(excinfo)
    assert "available splits: train" in message and split.split("+")[-1].split("[")[0] in message


def test_tfrecord_only_dataset_says_array_record_is_needed(prepared):
    name, data_dir, _ = prepared
    info_file = data_dir / name / "1.0.0" / "dataset_info.json"
    info = json.loads(info_file.read_text())
    info["fileFormat"] = "tfrecord"  # as if prepared by `tfds build` without --file_format array_record
    info_file.write_text(json.dumps(info))
    with pytest.raises(ValueError) as excinfo:
        open_tfds(name, data_dir=data_dir)
    assert "array_record" in _one_line(excinfo) and str(data_dir / name / "1.0.0") in str(excinfo.value)


def test_no_tensorflow_imported():
    assert "tensorflow" not in sys.modules
