"""The grain pipeline: host slices, seeded epochs, checkpointable iterators, preprocessing, global batches."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from edt_jax.data.pipeline import create_dataset, global_batches, host_batch_size, to_global
from edt_jax.data.preprocess import Preprocess, center_crop, random_horizontal_flip
from edt_jax.training.sharding import create_mesh


class IndexedImages:
    """n records whose label is their index and whose 4x4x3 image encodes it (for bookkeeping)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        image = np.zeros((4, 4, 3), np.uint8)
        image[..., 0], image[0, 0, 1] = i % 256, 255  # a marked corner shows flips
        return {"image": image, "label": np.int64(i)}


def labels_of(dataset, batches: int | None = None) -> list[int]:
    out = []
    for k, batch in enumerate(dataset):
        if batches is not None and k == batches:
            break
        out.extend(int(v) for v in batch["label"])
    return out


def test_two_hosts_read_disjoint_slices_that_cover_the_data():
    source = IndexedImages(50)
    seen = [labels_of(create_dataset(source, 5, seed=3, num_epochs=1, process_index=p, process_count=2))
            for p in range(2)]
    assert set(seen[0]).isdisjoint(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(50))


def test_epochs_are_seeded_permutations():
    source = IndexedImages(24)
    stream = labels_of(create_dataset(source, 4, seed=1, process_count=1, process_index=0), batches=12)
    first, second = stream[:24], stream[24:]
    assert sorted(first) == sorted(second) == list(range(24))
    assert first != second  # reshuffled each epoch
    again = labels_of(create_dataset(source, 4, seed=1, process_count=1, process_index=0), batches=12)
    other = labels_of(create_dataset(source, 4, seed=2, process_count=1, process_index=0), batches=12)
    assert again == stream and other != stream


def test_restored_iterator_continues_the_same_stream():
    dataset = create_dataset(IndexedImages(40), 4, seed=0, random_flip=True, process_count=1, process_index=0)
    iterator = iter(dataset)
    for _ in range(13):  # past the first epoch
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(3)]
    resumed = iter(dataset)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        np.testing.assert_array_equal(got["label"], want["label"])
        np.testing.assert_array_equal(got["image"], want["image"])


def test_batches_are_float_nhwc_in_range_with_int_labels():
    batch = next(iter(create_dataset(IndexedImages(16), 8, process_count=1, process_index=0)))
    assert batch["image"].shape == (8, 4, 4, 3) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32
    assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
    np.testing.assert_allclose(batch["image"][:, 0, 0, 1], 1.0)


def test_center_crop_follows_adm():
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (70, 150, 3), dtype=np.uint8)
    out = center_crop(wide, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    # A constant image stays constant through box halving and bicubic resizing.
    flat = np.full((90, 64, 1), 77, np.uint8)
    np.testing.assert_array_equal(center_crop(flat, 32), np.full((32, 32, 1), 77, np.uint8))
    # A left/right split image keeps its split in the middle of the crop.
    split = np.zeros((64, 128, 3), np.uint8)
    split[:, 64:] = 255
    cropped = center_crop(split, 32)
    assert cropped[:, :14].max() == 0 and cropped[:, 18:].min() == 255
    same = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(center_crop(same, 32), same)


def test_preprocess_grey_to_rgb_labels_and_latents():
    out = Preprocess(image_size=None, channels=3)({"image": np.full((4, 4, 1), 255, np.uint8), "label": 7})
    assert out["image"].shape == (4, 4, 3) and out["label"] == 7 and np.all(out["image"] == 1.0)
    assert Preprocess(label_key=None)({"image": np.zeros((2, 2, 3), np.uint8), "label": 5})["label"] == 0
    latent = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    out = Preprocess()({"latent": latent, "label": 3})
    np.testing.assert_array_equal(out["latent"], latent)
    assert "image" not in out


def test_random_flip_flips_half_the_time():
    record = {"image": np.arange(12, dtype=np.float32).reshape(1, 4, 3), "label": 0}
    rng = np.random.default_rng(0)
    flips = 0
    for _ in range(400):
        out = random_horizontal_flip(record, rng)["image"]
        if not np.array_equal(out, record["image"]):
            np.testing.assert_array_equal(out, record["image"][:, ::-1])
            flips += 1
    assert 160 < flips < 240


def test_global_batches_are_sharded_over_the_batch_axes():
    mesh = create_mesh(data=4, fsdp=2)
    dataset = create_dataset(IndexedImages(64), host_batch_size(16, 1, mesh), process_count=1, process_index=0)
    host = next(iter(dataset))
    batch = to_global(host, mesh)
    assert batch["image"].shape == (16, 4, 4, 3)
    assert batch["image"].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
    assert len(batch["image"].addressable_shards) == 8
    np.testing.assert_array_equal(np.asarray(batch["label"]), host["label"])
    second = next(global_batches(iter(dataset), mesh))
    assert second["label"].shape == (16,)


def test_bad_batch_sizes():
    mesh = create_mesh(data=8)
    with pytest.raises(ValueError, match="batch_size 12 is not divisible by the 8 devices"):
        host_batch_size(12, 1, mesh)
    with pytest.raises(ValueError, match="batch_size 9 is not divisible by the number of processes \\(2\\)"):
        host_batch_size(9, 2)
    with pytest.raises(ValueError, match="fewer than one batch of 16"):
        create_dataset(IndexedImages(20), 16, process_index=1, process_count=2)
    with pytest.raises(ValueError, match="process_index 2 must be in"):
        create_dataset(IndexedImages(20), 2, process_index=2, process_count=2)
