"""Scoring a learned representation on ground-truth data: DisDiff's protocol and the factor-swap analysis.

    gt = ShapesGroundTruth(indices=True)                       # observations are dataset indices
    table = encode_all(encode, gt)                             # (num_items, K) float64, every image once
    scores = score_representation(gt, table, num_chunks=7, protocols=("pca", "raw"), seed=0)

The metrics then look codes up by index, which is exactly the official computation (the encoder is
deterministic) at the cost of one pass over the dataset. ``pca`` is DisDiff's evaluation: the first
principal component of each factor's code chunk, fit on the codes of the whole dataset (``ChunkPCA``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from edt_jax.metrics import disentanglement as dis

PROTOCOLS = ("pca", "raw")
METRICS = ("factor_vae", "dci", "mig")


def encode_all(encode: Callable[[np.ndarray], Any], ground_truth, batch_size: int = 2048,
               log_every_s: float = 30.0) -> np.ndarray:
    """Codes of every item of ``ground_truth`` (an index-mode adapter with ``num_items`` and
    ``observations_at``): (num_items, K) float64, the encoder's (B, N, d) output flattened row-major."""
    n = int(ground_truth.num_items)
    out, start_time, last = None, time.time(), time.time()
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(n, start + batch_size))
        codes = np.asarray(encode(ground_truth.observations_at(idx)), dtype=np.float64).reshape(len(idx), -1)
        if out is None:
            out = np.empty((n, codes.shape[1]), np.float64)
        out[idx] = codes
        if time.time() - last > log_every_s:
            done, elapsed = idx[-1] + 1, time.time() - start_time
            logging.info("encoded %d/%d images (%.0f%%), ETA %.0f s", done, n, 100 * done / n,
                         elapsed / done * (n - done))
            last = time.time()
    return out


def representation_table(table: np.ndarray, protocol: str, num_chunks: int) -> np.ndarray:
    """(num_items, K) codes -> the metric inputs of ``protocol``: "raw" (all K entries) or "pca" (num_chunks)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; accepted: {', '.join(PROTOCOLS)}")
    return table if protocol == "raw" else dis.ChunkPCA(num_chunks).fit_transform(table)


def score_table(ground_truth, table: np.ndarray, *, seed: int = 0,
                metric_args: Mapping[str, Mapping[str, Any]] | None = None,
                metrics: Sequence[str] = METRICS) -> dict[str, dict]:
    """FactorVAE / DCI / MIG of the representation ``index -> table[index]`` with ``RandomState(seed)`` each
    (and numpy's global seed set to ``seed`` before DCI, whose classifiers draw from it)."""
    metric_args = dict(metric_args or {})
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; accepted: {', '.join(METRICS)}")
    rep = lambda idx: table[np.asarray(idx)]  # noqa: E731
    results = {}
    for name in metrics:
        args = dict(metric_args.get(name, {}))
        rs = np.random.RandomState(seed)
        if name == "factor_vae":
            results[name] = dis.factor_vae_score(ground_truth, rep, rs, **args)
        elif name == "dci":
            np.random.seed(seed)
            results[name] = {k: v for k, v in dis.dci(ground_truth, rep, rs, **args).items()
                             if k != "importance_matrix"}
        else:
            results[name] = {k: v for k, v in dis.mig(ground_truth, rep, rs, **args).items()
                             if k == "discrete_mig"}
    return {name: {k: float(v) for k, v in r.items() if np.ndim(v) == 0} for name, r in results.items()}


def score_representation(ground_truth, table: np.ndarray, *, num_chunks: int | None,
                         protocols: Sequence[str] = PROTOCOLS, seed: int = 0,
                         metric_args: Mapping[str, Mapping[str, Any]] | None = None,
                         metrics: Mapping[str, Sequence[str]] | None = None) -> dict[str, dict]:
    """{protocol: {metric: {...}}} for every protocol; "pca" needs ``num_chunks`` (None: raw only).
    ``metrics`` maps a protocol to the metrics it runs (default all of ``METRICS``)."""
    out = {}
    for protocol in protocols:
        if protocol == "pca" and num_chunks is None:
            continue
        start = time.time()
        rep_table = representation_table(table, protocol, num_chunks or 1)
        chosen = (metrics or {}).get(protocol, METRICS)
        out[protocol] = score_table(ground_truth, rep_table, seed=seed, metric_args=metric_args, metrics=chosen)
        logging.info("%s protocol (%d codes) scored in %.0f s: %s", protocol, rep_table.shape[1],
                     time.time() - start, out[protocol])
    return out


def what_changes(predict: Callable[[np.ndarray], Mapping[str, np.ndarray]], reference: np.ndarray,
                 swapped: Sequence[np.ndarray], factor_names: Sequence[str]) -> np.ndarray:
    """(num_swapped_factors, F) fraction of images whose predicted true factor f differs between ``reference``
    (B, H, W, C) and each ``swapped[c]`` (B, H, W, C), with ``predict(images) -> {factor name: (B,) class}``."""
    ref = predict(reference)
    rows = []
    for images in swapped:
        pred = predict(images)
        rows.append([float(np.mean(pred[name] != ref[name])) for name in factor_names])
    return np.asarray(rows)


def swap_grid(sources: np.ndarray, reconstructions: np.ndarray, swapped: Sequence[np.ndarray],
              donors: np.ndarray) -> np.ndarray:
    """One uint8 image: row 0 the source images, row 1 their reconstructions, then one row per factor c
    (source with code chunk c from the donor), last row the donors; every input (B, H, W, C) in [-1, 1]."""
    rows = [sources, reconstructions, *swapped, donors]
    pad = 2
    b, h, w, c = sources.shape
    grid = np.full((len(rows) * (h + pad) + pad, b * (w + pad) + pad, c), 255, np.uint8)
    for r, row in enumerate(rows):
        pixels = np.clip(np.rint((np.asarray(row) + 1.0) * 127.5), 0, 255).astype(np.uint8)
        for i in range(b):
            y, x = pad + r * (h + pad), pad + i * (w + pad)
            grid[y:y + h, x:x + w] = pixels[i]
    return grid
