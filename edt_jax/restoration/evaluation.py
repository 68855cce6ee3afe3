"""Restoration quality per image: PSNR, SSIM, measurement consistency, diversity over draws.

Images are in the models' range [-1, 1] (``data_range`` 2), NHWC. PSNR and SSIM are
``edt_jax.metrics.image`` (equal to scikit-image's); SSIM uses skimage's defaults (7x7 uniform window,
sample covariance), averaged over channels.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from edt_jax.metrics import image

DATA_RANGE = 2.0  # images in [-1, 1]


def consistency(degradation, x_hat: jax.Array, y: jax.Array, key: Any) -> jax.Array:
    """(B,) RMS of A(x_hat) - y: how well the restoration explains the measurement (A without noise).

    With noise of std s in y, a perfect restoration scores about s, not 0.
    """
    residual = degradation.operator(x_hat, key) - y
    return jnp.sqrt(jnp.mean(residual ** 2, axis=tuple(range(1, residual.ndim))))


def quality(x_hat: jax.Array, x0: jax.Array, y: jax.Array, degradation, key: Any) -> dict[str, jax.Array]:
    """{"psnr", "ssim", "consistency"}: (B,) each, for restorations ``x_hat`` of the clean ``x0``."""
    x_hat = jnp.clip(x_hat, -1.0, 1.0)
    return {"psnr": image.psnr(x0, x_hat, DATA_RANGE), "ssim": image.ssim(x0, x_hat, DATA_RANGE),
            "consistency": consistency(degradation, x_hat, y, key)}


def diversity(draws: jax.Array) -> jax.Array:
    """(B,) mean over pixels of the standard deviation across draws; ``draws`` (S, B, H, W, C)."""
    return jnp.mean(jnp.std(draws, axis=0), axis=tuple(range(1, draws.ndim - 1)))
