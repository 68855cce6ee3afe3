"""Discrete-time DDPM quantities, with the semantics of ADM / DiT ``gaussian_diffusion.py``.

A :class:`DiscreteDiffusion` holds the float64 NumPy tables of a diffusion with N steps indexed
n = 0..N-1 (n = 0 is the least noisy), exactly as ADM's ``GaussianDiffusion.__init__`` builds them.
:meth:`DiscreteDiffusion.respace` is ADM's ``SpacedDiffusion``: it keeps a subset of the timesteps
and recomputes betas so that the kept ``alphas_cumprod`` are unchanged; ``timestep_map[i]`` is the
original training timestep that index i stands for (what the network must be fed).

The ``jax.numpy`` helpers (:func:`q_sample`, :func:`q_posterior_mean_variance`, ...) take x in NHWC
(B, ...) and integer timesteps t (B,); coefficients are gathered from the float64 tables, cast to
x's dtype and broadcast over the trailing axes, as ADM's ``_extract_into_tensor``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from edt_jax.diffusion.schedules import NoiseScheduleVP

BETA_SCHEDULES = ("linear", "cosine", "scaled_linear")


def _betas_for_alpha_bar(num_steps: int, alpha_bar, max_beta: float = 0.999) -> np.ndarray:
    """(num_steps,) betas discretising a continuous alpha_bar(t), t in [0, 1] (improved DDPM)."""
    betas = []
    for i in range(num_steps):
        t1, t2 = i / num_steps, (i + 1) / num_steps
        betas.append(min(1.0 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return np.asarray(betas, dtype=np.float64)


def cosine_betas(num_steps: int) -> np.ndarray:
    """(num_steps,) float64 betas of improved DDPM's squared-cosine alpha_bar (s = 0.008, betas capped at 0.999);
    diffusers calls it ``squaredcos_cap_v2``."""
    return _betas_for_alpha_bar(num_steps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)


def beta_schedule(name: str, num_steps: int) -> np.ndarray:
    """(num_steps,) float64 betas of a named schedule, as ADM's ``get_named_beta_schedule``.

    name: "linear" -- ADM's scaled linear schedule (betas from 1e-4 to 0.02 for 1000 steps, scaled by
    1000 / num_steps so other lengths keep the same total noise); "cosine" -- improved-DDPM's
    squared-cosine alpha_bar with s = 0.008 and betas clipped at 0.999; "scaled_linear" -- Stable
    Diffusion's (diffusers' name): betas linear in sqrt(beta) from sqrt(0.00085) to sqrt(0.012), for any length.
    """
    if name not in BETA_SCHEDULES:
        raise ValueError(f"unknown beta schedule {name!r}; expected one of {', '.join(BETA_SCHEDULES)}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    num_steps = int(num_steps)
    if name == "linear":
        scale = 1000.0 / num_steps
        return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)
    if name == "scaled_linear":
        return np.linspace(0.00085**0.5, 0.012**0.5, num_steps, dtype=np.float64) ** 2
    return cosine_betas(num_steps)


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> set[int]:
    """The set of original timesteps to keep, exactly as ADM's ``space_timesteps``.

    section_counts: a list of counts, one per equal-length section of [0, num_timesteps) (e.g.
    ``[10, 15, 20]``), a comma-separated string of them (``"250"``, ``"10,15,20"``), or ``"ddimN"``
    for the evenly strided DDIM grid ``range(0, num_timesteps, stride)`` with exactly N entries.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired_count = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired_count:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(f"cannot create exactly {desired_count} steps with an integer stride from "
                             f"{num_timesteps} timesteps (section_counts={section_counts!r})")
        try:
            section_counts = [int(x) for x in section_counts.split(",")]
        except ValueError:
            raise ValueError(f"section_counts {section_counts!r} must be 'N', 'N1,N2,...' or 'ddimN'") from None
    section_counts = list(section_counts)
    if not section_counts:
        raise ValueError("section_counts must name at least one section, got an empty list")
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start_idx = 0
    all_steps = []
    for i, section_count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < section_count:
            raise ValueError(f"cannot divide a section of {size} timesteps into {section_count} steps "
                             f"(section_counts={section_counts!r}, num_timesteps={num_timesteps})")
        frac_stride = 1 if section_count <= 1 else (size - 1) / (section_count - 1)
        cur_idx = 0.0
        for _ in range(section_count):
            # Python's round (half to even) on purpose: it is what ADM uses.
            all_steps.append(start_idx + round(cur_idx))
            cur_idx += frac_stride
        start_idx += size
    return set(all_steps)


def _frozen(array: np.ndarray) -> np.ndarray:
    """A read-only copy (never the caller's array), so a frozen DiscreteDiffusion really is immutable."""
    array = np.array(array, copy=True)
    array.setflags(write=False)
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class DiscreteDiffusion:
    """Float64 tables of a discrete DDPM (all arrays (N,)); build with :meth:`from_betas`.

    ``posterior_*`` describe q(x_{n-1} | x_n, x_0) = N(coef1 x_0 + coef2 x_n, posterior_variance).
    ``posterior_log_variance_clipped`` replaces the first (zero) variance by the second, as ADM; a
    one-step diffusion has no second entry and uses log(betas) there instead (it is never used to add
    noise, since the last step is noiseless). ``timestep_map`` (int64) is the original training
    timestep of each index: ``arange(N)`` unless the diffusion was respaced.
    """

    betas: np.ndarray
    alphas: np.ndarray
    alphas_cumprod: np.ndarray
    alphas_cumprod_prev: np.ndarray
    alphas_cumprod_next: np.ndarray
    sqrt_alphas_cumprod: np.ndarray
    sqrt_one_minus_alphas_cumprod: np.ndarray
    log_one_minus_alphas_cumprod: np.ndarray
    sqrt_recip_alphas_cumprod: np.ndarray
    sqrt_recipm1_alphas_cumprod: np.ndarray
    posterior_variance: np.ndarray
    posterior_log_variance_clipped: np.ndarray
    posterior_mean_coef1: np.ndarray
    posterior_mean_coef2: np.ndarray
    timestep_map: np.ndarray

    @classmethod
    def from_betas(cls, betas, timestep_map=None) -> DiscreteDiffusion:
        """Tables of the diffusion with (N,) ``betas`` in (0, 1]; ``timestep_map`` defaults to arange(N)."""
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size < 1 or not np.all((betas > 0) & (betas <= 1)):
            raise ValueError(f"betas must be a non-empty 1-D array of values in (0, 1], got shape {betas.shape} "
                             f"with range [{betas.min() if betas.size else 'n/a'}, "
                             f"{betas.max() if betas.size else 'n/a'}]")
        n = betas.shape[0]
        if timestep_map is None:
            timestep_map = np.arange(n, dtype=np.int64)
        timestep_map = np.asarray(timestep_map, dtype=np.int64)
        if timestep_map.shape != (n,):
            raise ValueError(f"timestep_map must have shape ({n},) like betas, got {timestep_map.shape}")
        alphas = 1.0 - betas
        acp = np.cumprod(alphas)
        acp_prev = np.append(1.0, acp[:-1])
        acp_next = np.append(acp[1:], 0.0)
        with np.errstate(divide="ignore"):
            # Variance of q(x_{n-1} | x_n, x_0); exactly zero at n = 0, hence the clipped log below.
            posterior_variance = betas * (1.0 - acp_prev) / (1.0 - acp)
            if n > 1:
                log_var_clipped = np.log(np.append(posterior_variance[1], posterior_variance[1:]))
            else:
                log_var_clipped = np.log(betas)
            tables = {
                "betas": betas,
                "alphas": alphas,
                "alphas_cumprod": acp,
                "alphas_cumprod_prev": acp_prev,
                "alphas_cumprod_next": acp_next,
                "sqrt_alphas_cumprod": np.sqrt(acp),
                "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - acp),
                "log_one_minus_alphas_cumprod": np.log(1.0 - acp),
                "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / acp),
                "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / acp - 1.0),
                "posterior_variance": posterior_variance,
                "posterior_log_variance_clipped": log_var_clipped,
                "posterior_mean_coef1": betas * np.sqrt(acp_prev) / (1.0 - acp),
                "posterior_mean_coef2": (1.0 - acp_prev) * np.sqrt(alphas) / (1.0 - acp),
                "timestep_map": timestep_map,
            }
        return cls(**{k: _frozen(v) for k, v in tables.items()})

    @property
    def num_steps(self) -> int:
        """N, the number of timesteps of this (possibly respaced) diffusion."""
        return int(self.betas.shape[0])

    @property
    def is_respaced(self) -> bool:
        """True unless ``timestep_map`` is arange(N), i.e. the indices are the training timesteps."""
        return not np.array_equal(self.timestep_map, np.arange(self.num_steps))

    def respace(self, use_timesteps: Iterable[int]) -> DiscreteDiffusion:
        """ADM's ``SpacedDiffusion``: keep the indices in ``use_timesteps`` (e.g. from space_timesteps).

        The new betas are 1 - acp[n] / acp[previous kept n], so the kept alphas_cumprod are unchanged;
        the new timestep_map maps each kept index back to the original training timestep.
        """
        keep = sorted({int(t) for t in use_timesteps})
        if not keep or keep[0] < 0 or keep[-1] >= self.num_steps:
            raise ValueError(f"use_timesteps must be a non-empty set of indices in [0, {self.num_steps}), "
                             f"got {keep[:3] + ['...'] + keep[-3:] if len(keep) > 6 else keep}")
        acp = self.alphas_cumprod[keep]
        new_betas = 1.0 - acp / np.append(1.0, acp[:-1])
        return DiscreteDiffusion.from_betas(new_betas, timestep_map=self.timestep_map[keep])

    def to_noise_schedule(self) -> NoiseScheduleVP:
        """The continuous-time ``NoiseScheduleVP.discrete`` view of this (un-respaced) diffusion; its ``tables``
        are this object."""
        if self.is_respaced:
            raise ValueError("to_noise_schedule needs an un-respaced diffusion (timestep_map == arange(N)); "
                             "build the schedule from the original diffusion and pick steps in the sampler")
        schedule = NoiseScheduleVP.discrete(alphas_cumprod=self.alphas_cumprod)
        schedule.__dict__["tables"] = self  # the cached_property's slot: one set of tables, not a rebuilt copy
        return schedule


def as_tables(schedule: NoiseScheduleVP | DiscreteDiffusion) -> DiscreteDiffusion:
    """The ``DiscreteDiffusion`` tables of a discrete ``NoiseScheduleVP`` (or the tables themselves): what the
    functions that need ADM's per-timestep tables (training losses, ancestral sampling) accept."""
    if isinstance(schedule, DiscreteDiffusion):
        return schedule
    if isinstance(schedule, NoiseScheduleVP):
        return schedule.tables
    raise TypeError(f"expected a discrete NoiseScheduleVP (or DiscreteDiffusion), got {type(schedule).__name__}")


def as_schedule(schedule: NoiseScheduleVP | DiscreteDiffusion) -> NoiseScheduleVP:
    """The ``NoiseScheduleVP`` of a schedule given either way (a ``DiscreteDiffusion`` becomes its discrete view)."""
    if isinstance(schedule, NoiseScheduleVP):
        return schedule
    if isinstance(schedule, DiscreteDiffusion):
        return schedule.to_noise_schedule()
    raise TypeError(f"expected a NoiseScheduleVP (or DiscreteDiffusion), got {type(schedule).__name__}")


# --------------------------------------------------------------------------------- jnp helpers
def extract(table: np.ndarray, t: jax.Array, x: jax.Array) -> jax.Array:
    """table[t] cast to x's (floating) dtype and shaped (B, 1, ..., 1) to broadcast against x (B, ...)."""
    t = jnp.asarray(t)
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must have shape ({x.shape[0]},) (one timestep per batch element of x with shape "
                         f"{x.shape}), got {t.shape}")
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    coef = jnp.asarray(table, dtype=dtype)[t]
    return coef.reshape(coef.shape + (1,) * (x.ndim - 1))


def q_sample(diffusion: DiscreteDiffusion | NoiseScheduleVP, x0: jax.Array, t: jax.Array,
             noise: jax.Array) -> jax.Array:
    """Sample x_t ~ q(x_t | x_0) = sqrt(acp_t) x0 + sqrt(1 - acp_t) noise; x0, noise (B, ...), t (B,)."""
    diffusion = as_tables(diffusion)
    return (extract(diffusion.sqrt_alphas_cumprod, t, x0) * x0
            + extract(diffusion.sqrt_one_minus_alphas_cumprod, t, x0) * noise)


def q_posterior_mean_variance(diffusion: DiscreteDiffusion | NoiseScheduleVP, x0: jax.Array, xt: jax.Array,
                              t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0), each (B, ...) like xt."""
    diffusion = as_tables(diffusion)
    mean = (extract(diffusion.posterior_mean_coef1, t, xt) * x0
            + extract(diffusion.posterior_mean_coef2, t, xt) * xt)
    variance = jnp.broadcast_to(extract(diffusion.posterior_variance, t, xt), xt.shape)
    log_variance = jnp.broadcast_to(extract(diffusion.posterior_log_variance_clipped, t, xt), xt.shape)
    return mean, variance, log_variance


def predict_x0_from_eps(diffusion: DiscreteDiffusion | NoiseScheduleVP, xt: jax.Array, t: jax.Array,
                        eps: jax.Array) -> jax.Array:
    """x0 = sqrt(1 / acp_t) x_t - sqrt(1 / acp_t - 1) eps; xt, eps (B, ...), t (B,)."""
    diffusion = as_tables(diffusion)
    return (extract(diffusion.sqrt_recip_alphas_cumprod, t, xt) * xt
            - extract(diffusion.sqrt_recipm1_alphas_cumprod, t, xt) * eps)


def predict_eps_from_x0(diffusion: DiscreteDiffusion | NoiseScheduleVP, xt: jax.Array, t: jax.Array,
                        x0: jax.Array) -> jax.Array:
    """eps = (sqrt(1 / acp_t) x_t - x0) / sqrt(1 / acp_t - 1); xt, x0 (B, ...), t (B,)."""
    diffusion = as_tables(diffusion)
    return ((extract(diffusion.sqrt_recip_alphas_cumprod, t, xt) * xt - x0)
            / extract(diffusion.sqrt_recipm1_alphas_cumprod, t, xt))
