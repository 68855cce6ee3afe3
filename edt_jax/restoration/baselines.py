"""Zero-shot restoration with an unconditional denoiser: DDNM's range / null-space decomposition.

DDNM (Wang, Yu, Zhang, ICLR 2023) replaces the denoiser's x0 estimate at every step by
``A^+ y + (I - A^+ A) x0``: the part of the image the measurement fixes is taken from y, the rest
from the denoiser. It needs no training, only a linear degradation operator A and its pseudo-inverse
(``degradations.pseudo_inverse``). This is the noise-free DDNM; with a noisy y the projection copies
the noise into the range space (DDNM+ would scale it), which the benchmark reports as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from edt_jax.restoration.degradations import null_space_project


def ddnm_model(denoise: Callable, params: Any, degradation, y: jax.Array, key: jax.Array, *, iters: int = 50,
               damping: float = 0.0) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``model(x_t, t_input) -> x0``: the denoiser's x0 projected onto {x : A x = y}; for any sampler.

    ``denoise(params, x_t, t_input) -> x0`` as ``dpir.x0_predictor``; ``key`` fixes the operator of
    random-kernel degradations (the one that produced y). ``iters`` / ``damping``: the pseudo-inverse's
    conjugate gradients; square blurs are ill-conditioned (condition number ~1e3 for a 5x5 motion kernel)
    and need ``damping`` ~1e-3..1e-2, which also keeps y's noise from being amplified.
    """
    if not degradation.linear:
        raise ValueError(f"DDNM needs a linear degradation, got {degradation.spec()!r}")

    def model(x_t, t_input):
        return null_space_project(degradation, denoise(params, x_t, t_input), y, key, iters=iters, damping=damping)

    return model
