"""Latent pipeline: extract latents with a VAE (resumable), train on them, sample and decode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs import shapes_edt_tiny
from edt_jax import data as data_lib
from edt_jax.data.latent_cache import ChunkStore
from edt_jax.models.vae import create_vae, vae_params_from_torch
from edt_jax.models.vae_convert import diffusers_name
from edt_jax.runs import build, train
from edt_jax.runs.latents import extract

REPO = Path(__file__).resolve().parents[1]
VAE = dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, latent_channels=4)
NUM = 48  # records encoded


def write_random_vae(path: Path) -> None:
    """A random tiny VAE saved under diffusers names and layouts, as a user's weights file would be."""
    vae = create_vae(**VAE)
    params = vae.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    state = {}
    for key, value in traverse_util.flatten_dict(params).items():
        value = np.asarray(value)
        if key[-1] == "kernel":
            value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
        state[f"param/{diffusers_name(key)}"] = value
    np.savez(path, **state)
    assert vae_params_from_torch({k[6:]: v for k, v in state.items()}, vae) is not None


def latent_config(tmp_path: Path, name: str = "shapes_latents"):
    config = shapes_edt_tiny.get_config("test")
    config.total_steps, config.checkpoint_every_steps, config.loss.masked_pass = 4, 4, False
    config.model.update(dict(input_size=16, in_channels=4, patch_size=2))  # token grids 8/4/2/4/8, as at 32 px
    config.data.update(dict(source=f"tfds:{name}", data_dir=str(tmp_path / "tfds"), channels=None))
    config.data.image_source = "shapes"
    config.vae.update(dict(path=str(tmp_path / "vae.npz"), **VAE))
    return config


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("latents")
    write_random_vae(tmp / "vae.npz")
    config = latent_config(tmp)
    name = extract(config, None, str(tmp / "tfds"), chunk_size=16, num_examples=NUM, batch_size=8)
    return tmp, config, name


def test_extracted_latents_are_the_scaled_posterior_samples_of_flipped_images(extracted):
    tmp, config, name = extracted
    records = data_lib.create_source(f"tfds:{name}", data_dir=str(tmp / "tfds"))
    assert len(records) == NUM
    vae = create_vae(**VAE)
    params = build.build_vae(config)[1]
    shapes = data_lib.create_source("shapes")
    for i in (0, 5, 17):
        image = shapes[i]["image"].astype(np.float32) / 127.5 - 1
        if np.random.default_rng([0, i]).random() < 0.5:  # the per-record flip, seed 0
            image = image[:, ::-1]
        mean, logvar = vae.apply({"params": params}, jnp.asarray(image[None]), method=vae.encode)
        noise = jax.random.normal(jax.random.fold_in(jax.random.key(0), i), mean.shape[1:])
        expected = 0.18215 * (mean[0] + jnp.exp(0.5 * logvar[0]) * noise)
        assert records[i]["latent"].shape == (16, 16, 4)
        np.testing.assert_allclose(records[i]["latent"], expected, atol=1e-5)
        assert records[i]["label"] == shapes[i]["label"]


def test_interrupted_extraction_resumes_the_missing_chunks_only(extracted, tmp_path):
    tmp, config, _ = extracted
    config = latent_config(tmp, name="resumed_latents")
    config.data.data_dir = str(tmp_path)
    kwargs = dict(chunk_size=16, num_examples=NUM, batch_size=8)
    extract(config, None, str(tmp_path), **kwargs)
    chunks = sorted((tmp_path / "resumed_latents_chunks" / "chunks").glob("*.npz"))
    assert [c.name for c in chunks] == ["000000.npz", "000001.npz", "000002.npz"]
    before = {c.name: (c.stat().st_mtime_ns, np.load(c)["latent"]) for c in chunks}
    # As if killed while writing chunk 1: its file is missing and a partial temporary file is left.
    os.remove(chunks[1])
    (chunks[1].parent / "000001.tmp.npz").write_bytes(b"partial")
    extract(config, None, str(tmp_path), **kwargs)
    after = sorted((tmp_path / "resumed_latents_chunks" / "chunks").glob("*.npz"))
    assert [c.name for c in after] == ["000000.npz", "000001.npz", "000002.npz"]  # the partial file was replaced
    for c in after:
        rewritten = c.stat().st_mtime_ns != before[c.name][0]
        assert rewritten == (c.name == "000001.npz")
        np.testing.assert_array_equal(np.load(c)["latent"], before[c.name][1])  # same flips and noise


def test_a_cache_made_with_other_settings_is_refused(tmp_path):
    ChunkStore(tmp_path, 10, 4, {"store": "sample"})
    with pytest.raises(ValueError, match=r"other settings \(settings.store\)"):
        ChunkStore(tmp_path, 10, 4, {"store": "mean_std"})


def test_stored_posteriors_give_a_fresh_latent_each_epoch(extracted, tmp_path):
    tmp, config, _ = extracted
    config = latent_config(tmp, name="posterior_latents")
    extract(config, None, str(tmp_path), store="mean_std", chunk_size=16, num_examples=16,
                            batch_size=8)
    source = data_lib.create_source("tfds:posterior_latents", data_dir=str(tmp_path))
    assert set(source[0]) == {"latent_mean", "latent_std", "label"}
    batches = iter(data_lib.create_dataset(source, 16, shuffle=False, num_threads=1))
    first, second = next(batches), next(batches)
    assert first["latent"].shape == (16, 16, 16, 4) and "latent_mean" not in first
    assert not np.allclose(first["latent"], second["latent"])  # same records, new posterior draws


def test_train_on_latents_then_sample_decodes_with_the_vae(extracted, tmp_path):
    tmp, config, _ = extracted
    result = train(config, str(tmp_path))
    assert result.step == 4
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-m", "launch.sample", f"--workdir={tmp_path}", "--num_samples=4",
                          "--steps=3", "--sampler=ddim", f"--output={tmp_path / 'grid.png'}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    saved = np.load(tmp_path / "grid.npz")
    assert saved["latents"].shape == (4, 16, 16, 4)
    assert saved["samples"].shape == (4, 32, 32, 3) and np.abs(saved["samples"]).max() <= 1
    assert (tmp_path / "grid.png").is_file()
    assert f"the grid {(tmp_path / 'grid.png').resolve()}" in out.stdout  # the command says where it wrote
