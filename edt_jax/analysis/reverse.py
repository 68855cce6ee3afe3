"""The reverse process band by band: how soon each frequency band of a sampler's data predictions settles.

Along a ``samplers.Trajectory`` the data prediction of call k, denoised_k, moves towards the final sample. If the
shape comes first and the details later, the low band of denoised_k reaches its final value in fewer calls than
the high band does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from edt_jax.analysis import frequency


def band_distances(denoised: jax.Array, final: jax.Array, cutoff: float) -> dict[str, np.ndarray]:
    """Relative distance of each call's data prediction to the final sample, per band.

    denoised (S, B, H, W, C) (``Trajectory.denoised``), final (B, H, W, C). For band b of ``frequency.split`` at
    ``cutoff``: ||b(denoised_k) - b(final)|| / ||b(final)|| per sample, averaged over the batch, as ``low`` and
    ``high`` (S,) numpy arrays; ``total`` is the same for the whole image.
    """
    denoised, final = jnp.asarray(denoised, jnp.float32), jnp.asarray(final, jnp.float32)
    if denoised.ndim != 5 or denoised.shape[1:] != final.shape:
        raise ValueError(f"denoised must be (S, B, H, W, C) and final (B, H, W, C) of the same images, got "
                         f"{tuple(denoised.shape)} and {tuple(final.shape)}")

    def norms(v):  # (B, ...) -> (B,)
        return jnp.linalg.norm(v.reshape(v.shape[0], -1), axis=-1)

    low_f, high_f = frequency.split(final, cutoff)

    @jax.jit
    def one_call(d):
        low, high = frequency.split(d - final, cutoff)  # linear: the bands of the difference
        return {"low": jnp.mean(norms(low) / jnp.maximum(norms(low_f), 1e-12)),
                "high": jnp.mean(norms(high) / jnp.maximum(norms(high_f), 1e-12)),
                "total": jnp.mean(norms(d - final) / jnp.maximum(norms(final), 1e-12))}

    rows = [one_call(d) for d in denoised]
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def settling_call(distances: np.ndarray, tolerance: float = 0.1) -> int | None:
    """The first call index k from which ``distances`` stays within ``tolerance`` (distances[j] <= tolerance for
    every j >= k); None if the last one is still above it."""
    distances = np.asarray(distances)
    above = np.nonzero(distances > tolerance)[0]
    if above.size == 0:
        return 0
    k = int(above[-1]) + 1
    return k if k < distances.size else None
