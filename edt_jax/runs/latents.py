"""Encode an image source into an ArrayRecord dataset of VAE latents (EDT/DiT's extract_features.py).

    name = extract(config, vae_path, output)     # what launch.extract_latents runs

Reads the images of ``config.data.image_source`` (or ``source_spec``), centre-crops them to
``config.data.image_size`` (ADM's crop), flips each one left-right with probability 1/2 (drawn from
(seed, record index), so a re-run makes the same choice), encodes them with the VAE of ``config.vae``
and stores ``scale * sample of the posterior`` (``store="sample"``, EDT's recipe) or the posterior's
``scale * mean`` and ``scale * std`` (``store="mean_std"``; the trainer then draws a fresh latent every
epoch). The result is the TFDS dataset named by ``config.data.source`` (``tfds:<name>``) in ``output``,
ready for training.

Resumable: finished chunks of ``chunk_size`` records are kept in ``<output>/<name>_chunks``; a
restarted run encodes only the missing ones. Several processes split the chunks between them.
"""

from __future__ import annotations

import os
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from edt_jax import data as data_lib
from edt_jax import paths
from edt_jax.batching import map_in_batches, round_up
from edt_jax.data.latent_cache import ChunkStore, build_dataset_from_chunks
from edt_jax.runs import build
from edt_jax.training import sharding

STORE_MODES = ("sample", "mean_std")


def dataset_name(config) -> str:
    kind, _, rest = config.data.source.partition(":")
    if kind != "tfds" or not rest:
        raise ValueError(f"data.source must name the latent dataset to write as tfds:<name>, got "
                         f"{config.data.source!r}")
    return rest.partition(":")[0]


def flip_per_record(image: np.ndarray, index: int, seed: int) -> np.ndarray:
    """(H, W, C) image, flipped left-right with probability 1/2 by a coin drawn from (seed, record index) alone:
    independent of batching, processes and restarts."""
    return image[:, ::-1] if np.random.default_rng([seed, index]).random() < 0.5 else image


def make_encoder(vae, params, scale: float, store: str, seed: int, mesh):
    """jitted (images (B, H, W, 3) in [-1, 1], record indices (B,)) -> dict of (B, h, w, c) arrays."""
    base_key = jax.random.key(seed)

    @jax.jit
    def encode(params, images, indices):
        mean, logvar = vae.apply({"params": params}, images, method=vae.encode)
        std = jnp.exp(0.5 * logvar)
        if store == "mean_std":
            return {"latent_mean": scale * mean, "latent_std": scale * std}
        # One key per record index: the same latent whatever the batch size or device count.
        keys = jax.vmap(lambda i: jax.random.fold_in(base_key, i))(indices)
        noise = jax.vmap(lambda k: jax.random.normal(k, mean.shape[1:], mean.dtype))(keys)
        return {"latent": scale * (mean + std * noise)}

    batch_sharding = sharding.batch_sharding(mesh)
    params = jax.device_put(params, sharding.replicated(mesh))

    def run(images: np.ndarray, indices: np.ndarray) -> dict[str, np.ndarray]:
        # One batch padded to split over the devices.
        return map_in_batches(lambda x, i: encode(params, x, i), images, indices,
                              batch_size=round_up(len(images), mesh.size), sharding=batch_sharding)

    return run


def extract(config, vae_path: str | None, output: str, *, source_spec: str | None = None, store: str = "sample",
            batch_size: int = 64, chunk_size: int = 4096, num_examples: int | None = None, seed: int = 0) -> str:
    """Encode the source into ``output/<name>`` (resuming a partial extraction); returns the dataset name."""
    name = dataset_name(config)
    source_spec = source_spec or config.data.get("image_source")
    if not source_spec:
        raise ValueError("no image source: pass --source or set data.image_source in the config")
    built = build.build_vae(config, vae_path)
    if built is None:
        raise ValueError("no VAE weights: pass --vae or set vae.path in the config")
    vae, params, scale = built
    source = data_lib.create_source(source_spec, data_dir=config.data.get("data_dir") or None)
    total = len(source) if num_examples is None else min(num_examples, len(source))
    image_size = config.data.get("image_size")
    settings = dict(source=source_spec, vae=str(vae_path or config.vae.path), vae_config=build.to_plain(config.vae),
                    image_size=image_size, store=store, seed=seed)
    store_ = ChunkStore(paths.as_path(output) / f"{name}_chunks", total, chunk_size, settings)
    mesh = sharding.create_mesh(devices=jax.local_devices())  # each process encodes its own chunks
    encode = make_encoder(vae, params, scale, store, seed, mesh)
    records = grain.MapDataset.source(source).map(data_lib.Preprocess(image_size, 3, config.data.get("label_key")))
    pending = store_.pending(jax.process_index(), jax.process_count())
    done_before = store_.num_chunks - len(store_.pending())
    logging.info("%d records in %d chunks: %d already done, %d to encode on this process", total,
                 store_.num_chunks, done_before, len(pending))
    start, encoded = time.time(), 0
    for count, chunk in enumerate(pending, 1):
        rows = store_.chunk_range(chunk)
        parts = {}
        batches = (records[rows.start:rows.stop].batch(batch_size)
                   .to_iter_dataset(grain.ReadOptions(num_threads=max(1, min(8, (os.cpu_count() or 1) // 2)))))
        offset = rows.start
        for batch in batches:
            indices = np.arange(offset, offset + len(batch["label"]))
            images = np.stack([flip_per_record(im, i, seed) for im, i in zip(batch["image"], indices, strict=True)])
            for key, value in encode(images, indices.astype(np.int32)).items():
                parts.setdefault(key, []).append(value)
            parts.setdefault("label", []).append(np.asarray(batch["label"], np.int64))
            offset += len(indices)
        store_.write(chunk, {k: np.concatenate(v) for k, v in parts.items()})
        encoded += len(rows)
        rate = encoded / (time.time() - start)
        eta = (sum(len(store_.chunk_range(c)) for c in pending[count:])) / rate
        logging.info("chunk %d (%d/%d on this process): %.1f img/s, ETA %.0f s", chunk, count, len(pending), rate, eta)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("latent chunks written")
    if jax.process_index() == 0:
        build_dataset_from_chunks(store_, paths.expand(output), name)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("latent dataset written")
    return name
