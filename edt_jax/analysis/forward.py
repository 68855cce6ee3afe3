"""The forward process band by band: how fast the noise of x_t = alpha_t x0 + sigma_t eps swamps each band of x0.

White noise spreads its power evenly over all frequencies, while images concentrate theirs at low frequencies, so
the signal-to-noise ratio of the low band stays high long after the high band is lost (Yi et al., NeurIPS 2024,
Fig. 2). ``forward_bands`` measures it on real data; ``crossing_timestep`` says where a band's SNR falls to 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from edt_jax.analysis import frequency


def _rms(v: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(v)))


def _cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean over samples of the cosine similarity of a and b (B, ...)."""
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    return jnp.mean(jnp.sum(a * b, -1) / jnp.maximum(jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1), 1e-12))


def forward_bands(x0: jax.Array, alphas_cumprod: np.ndarray, timesteps: Sequence[int], cutoff: float,
                  key: jax.Array, num_bins: int = 16) -> dict[str, np.ndarray]:
    """Band statistics of the forward process at each of ``timesteps`` (T,) for data x0 (B, H, W, C).

    One noise draw eps (from ``key``) serves every t, as one would noise an image step by step. Returns numpy
    arrays: ``timesteps`` (T,); ``alpha``/``sigma`` (T,) = sqrt(abar_t), sqrt(1 - abar_t); per band (``low``,
    ``high`` of ``frequency.split`` at ``cutoff``, and ``low_ac``, the low band without each image's mean) the RMS
    per element of the signal alpha_t band(x0)
    (``signal_<band>``), of the noise sigma_t band(eps) (``noise_<band>``) and of band(x_t) (``xt_<band>``), the
    band's SNR signal^2 / noise^2 (``snr_<band>``) and the mean cosine similarity of band(x_t) with band(x0)
    (``similarity_<band>``: how much of the band x_t still shows); ``radial_snr`` (T, num_bins) the SNR per
    radial band of ``frequency.radial_power`` (batch-averaged powers), ``radial_edges`` (num_bins + 1,), and
    ``low_power_fraction``, the share of x0's power in the low band.
    """
    x0 = jnp.asarray(x0, jnp.float32)
    timesteps = np.asarray(timesteps, np.int64)
    acp = np.asarray(alphas_cumprod, np.float64)
    if timesteps.ndim != 1 or timesteps.size == 0 or timesteps.min() < 0 or timesteps.max() >= acp.size:
        raise ValueError(f"timesteps must be a 1-D array of integers in [0, {acp.size}), got {timesteps!r}")
    eps = jax.random.normal(key, x0.shape, x0.dtype)
    low0, high0 = frequency.split(x0, cutoff)
    low_e, high_e = frequency.split(eps, cutoff)
    # The low band without each image's mean (DC): the mean brightness is not shape, and it dominates the band.
    ac0, ac_e = (v - v.mean(axis=(1, 2), keepdims=True) for v in (low0, low_e))
    power0 = jnp.mean(frequency.radial_power(x0, num_bins), 0)
    power_e = jnp.mean(frequency.radial_power(eps, num_bins), 0)

    @jax.jit
    def at(alpha, sigma):
        stats = {}
        for band, clean, noise in (("low", low0, low_e), ("high", high0, high_e), ("low_ac", ac0, ac_e)):
            signal_rms, noise_rms = alpha * _rms(clean), sigma * _rms(noise)
            stats[f"signal_{band}"] = signal_rms
            stats[f"noise_{band}"] = noise_rms
            stats[f"xt_{band}"] = _rms(alpha * clean + sigma * noise)
            stats[f"snr_{band}"] = jnp.square(signal_rms / noise_rms)
            stats[f"similarity_{band}"] = _cosine(alpha * clean + sigma * noise, clean)
        stats["radial_snr"] = alpha**2 * power0 / (sigma**2 * power_e)
        return stats

    alphas, sigmas = np.sqrt(acp[timesteps]), np.sqrt(1.0 - acp[timesteps])
    rows = [at(jnp.float32(a), jnp.float32(s)) for a, s in zip(alphas, sigmas, strict=True)]
    out = {k: np.stack([np.asarray(r[k], np.float64) for r in rows]) for k in rows[0]}
    total = float(jnp.sum(jnp.square(x0)))
    out.update(timesteps=timesteps, alpha=alphas, sigma=sigmas, radial_edges=frequency.radial_bin_edges(num_bins),
               low_power_fraction=np.float64(float(jnp.sum(jnp.square(low0))) / total))
    return out


def crossing_timestep(timesteps: np.ndarray, snr: np.ndarray, level: float = 1.0) -> float | None:
    """The (fractional) timestep at which ``snr`` (decreasing in t) first falls to ``level``, interpolated
    linearly in log SNR between the two measured timesteps around it; None if it never does."""
    timesteps, log_snr = np.asarray(timesteps, np.float64), np.log(np.asarray(snr, np.float64))
    below = np.nonzero(log_snr <= np.log(level))[0]
    if below.size == 0:
        return None
    k = int(below[0])
    if k == 0:
        return float(timesteps[0])
    frac = (log_snr[k - 1] - np.log(level)) / (log_snr[k - 1] - log_snr[k])
    return float(timesteps[k - 1] + frac * (timesteps[k] - timesteps[k - 1]))
