"""DisDiff on a frozen DPM: the training loss for the library's trainer, the shifted sampler and factor swaps.

    model = DisDiff(encoder, decoder, eps_fn, alphas_cumprod, dis_weight=0.05)
    task = Task(init_params=model.init_params(image_shape), loss_fn=model.loss_fn, frozen=dpm_params)
    ...
    codes = model.encode(params, x0)                                   # (B, N, d)
    eps_model = model.noise_model(params, dpm_params, codes, ns)       # (x_t, t_input) -> eps_hat
    x = samplers.sample("ddim", eps_model, x_T, ns, steps=20)
    x_swapped = samplers.sample("ddim", model.noise_model(params, dpm_params, swap_codes(codes, donor_codes, c), ns),
                                x_T, ns, steps=20)

``eps_fn(dpm_params, x_t, t_input) -> eps`` is the frozen DPM as a noise predictor (``run.noise_predictor()``
of a trained run, or ``noise_predictor`` of any network). Params are ``{"encoder": ..., "decoder": ...}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from edt_jax import samplers
from edt_jax.deprecation import warn_deprecated
from edt_jax.diffusion import NoiseScheduleVP
from edt_jax.disentangle.losses import WEIGHTINGS, disentangling_loss, shifted_x0, train_shift_coef
from edt_jax.samplers.wrappers import noise_predictor  # noqa: F401 (re-exported)

SAMPLERS = samplers.SAMPLERS
EpsFn = Callable[[Any, jax.Array, jax.Array], jax.Array]  # (dpm_params, x_t, t_input) -> eps


def swap_codes(codes: jax.Array, donors: jax.Array, factor: int) -> jax.Array:
    """codes (B, N, d) with chunk ``factor`` replaced by the donors' (B, N, d) chunk ``factor``."""
    n = codes.shape[1]
    if not 0 <= int(factor) < n:
        raise ValueError(f"factor={factor!r} is not a factor index; the codes have N={n} factors (0..{n - 1})")
    return codes.at[:, factor].set(donors[:, factor])


RECONSTRUCTIONS = ("eps", "x0")  # what the reconstruction L1 measures (DisDiff.reconstruction)


@dataclasses.dataclass(frozen=True)
class DisDiff:
    """The DisDiff objective on a frozen noise predictor ``eps_fn``.

    encoder: ``Encoder`` (x -> (B, N, d)); decoder: ``SubGradientDecoder`` (-> (N, B, H, W, C));
    alphas_cumprod: (T,) the frozen DPM's schedule; dis_weight: lambda of the disentangling loss (0 trains
    the reconstruction alone and skips the second pass); dis_weighting: its per-example weight
    (``losses.WEIGHTINGS``: "x0" official, "none" not); train_encoder_in_dis: the official ``train_enc_flag``
    (default off: the disentangling loss reads the codes through a frozen copy of the encoder; on: through
    the encoder itself, so the cross-entropies train it directly); reconstruction: ``RECONSTRUCTIONS``, "eps"
    (official: L1 between the noise and the shifted noise prediction) or "x0" (not official: the same L1 read as
    the error of the implied x0, i.e. times sqrt((1 - abar_t) / abar_t), so the high-noise steps, where only the
    codes can say what the image is, are not weighted down by sqrt(abar_t / (1 - abar_t)) -> 0).
    """

    encoder: nn.Module
    decoder: nn.Module
    eps_fn: EpsFn
    alphas_cumprod: np.ndarray
    dis_weight: float = 0.05
    dis_weighting: str = "x0"
    train_encoder_in_dis: bool = False
    reconstruction: str = "eps"

    def __post_init__(self) -> None:
        if self.dis_weight < 0:
            raise ValueError(f"dis_weight={self.dis_weight!r} must be >= 0 (0 = reconstruction only)")
        if self.dis_weighting not in WEIGHTINGS:
            raise ValueError(f"dis_weighting={self.dis_weighting!r}; accepted: {', '.join(WEIGHTINGS)}")
        if self.reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"reconstruction={self.reconstruction!r}; accepted: {', '.join(RECONSTRUCTIONS)}")

    @property
    def num_factors(self) -> int:
        return self.encoder.num_factors

    def init_params(self, image_shape: tuple[int, int, int]) -> Callable[[jax.Array], dict]:
        """``key -> {"encoder", "decoder"}`` for images of ``image_shape`` (H, W, C)."""
        x = jnp.zeros((1, *image_shape), jnp.float32)

        def init(key):
            k_enc, k_dec = jax.random.split(key)
            enc = self.encoder.init(k_enc, x)["params"]
            codes = jnp.zeros((1, self.num_factors, self.encoder.code_dim), jnp.float32)
            dec = self.decoder.init(k_dec, x, x, jnp.zeros((1,), jnp.int32), codes)["params"]
            return {"encoder": enc, "decoder": dec}

        return init

    def encode(self, params: dict, x: jax.Array) -> jax.Array:
        """Images (B, H, W, C) in [-1, 1] -> codes (B, N, d)."""
        return self.encoder.apply({"params": params["encoder"]}, x)

    def fields(self, params: dict, x_t: jax.Array, eps: jax.Array, t: jax.Array, codes: jax.Array) -> jax.Array:
        """The N sub-gradient fields (N, B, H, W, C) of codes (B, N, d) at (x_t, t)."""
        return self.decoder.apply({"params": params["decoder"]}, x_t, eps, t, codes)

    def loss_fn(self, params: dict, frozen: Any, batch: dict, key: jax.Array) -> tuple[jax.Array, dict]:
        """The official ``p_losses`` (L1 on the noise, loss_type l1) plus lambda * mean ``dis_loss``.

        One timestep, noise and factor c per example; the disentangling loss reads the codes through a
        frozen copy of the current encoder (stop_gradient; the encoder learns from it only through the codes
        it gives the fields), or with ``train_encoder_in_dis`` through the encoder itself.
        """
        x0 = batch["image"].astype(jnp.float32)
        batch_size = x0.shape[0]
        abar = jnp.asarray(self.alphas_cumprod, jnp.float32)
        k_t, k_noise, k_factor = jax.random.split(key, 3)
        t = jax.random.randint(k_t, (batch_size,), 0, abar.shape[0])
        noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
        a = abar[t].reshape((-1,) + (1,) * (x0.ndim - 1))
        x_t = jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise
        eps = jax.lax.stop_gradient(self.eps_fn(frozen, x_t, t))
        codes = self.encode(params, x0)
        g = self.fields(params, x_t, eps, t, codes)  # (N, B, H, W, C)
        coef = train_shift_coef(abar, t).reshape(a.shape)
        error = jnp.abs(noise - (eps + coef * jnp.sum(g, axis=0)))
        if self.reconstruction == "x0":  # |x0 - x0_shifted| = sqrt((1 - abar) / abar) |noise - eps_shifted|
            error = error * jnp.sqrt((1.0 - a) / a)
        reconstruction = jnp.mean(error)
        metrics = {"reconstruction": reconstruction}
        if self.dis_weight == 0:
            return reconstruction, metrics
        factor = jax.random.randint(k_factor, (batch_size,), 0, self.num_factors)
        g_c = g[factor, jnp.arange(batch_size)]
        x0_pred, x0_shifted = shifted_x0(x_t, t, eps, g_c, abar)
        reader = params if self.train_encoder_in_dis else {"encoder": jax.lax.stop_gradient(params["encoder"])}
        codes_pred = jax.lax.stop_gradient(self.encode(reader, x0_pred))  # the official no-grad block
        codes_shifted = self.encode(reader, x0_shifted)
        dis = disentangling_loss(codes_pred, codes_shifted, codes, factor, x0_pred, x0_shifted, self.dis_weight,
                                 weighting=self.dis_weighting)
        metrics.update({f"dis_{k}": jnp.mean(v) for k, v in dis.items()})
        return reconstruction + jnp.mean(dis["total"]), metrics

    def noise_model(self, params: dict, dpm_params: Any, codes: jax.Array, ns: NoiseScheduleVP,
                    factors: jax.Array | None = None) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """``model(x_t, t_input) -> eps_theta + s_t * sum_n G_n`` for the samplers (``prediction="eps"``),
        s_t = -sqrt(1 - abar_t) read from ``ns`` (so fractional t_input works). ``factors`` (N,) 0/1 keeps
        only the fields of the factors marked 1 (default all)."""

        def model(x_t, t_input):
            t_input = jnp.broadcast_to(t_input, (x_t.shape[0],))
            eps = self.eps_fn(dpm_params, x_t, t_input)
            g = self.fields(params, x_t, eps, t_input, codes)
            if factors is not None:
                g = g * jnp.asarray(factors, g.dtype).reshape((-1,) + (1,) * (g.ndim - 1))
            s = -ns.marginal_std(ns.continuous_time(t_input)).reshape((-1,) + (1,) * (x_t.ndim - 1))
            return eps + s * jnp.sum(g, axis=0)

        return model


def sample(model: Callable[[jax.Array, jax.Array], jax.Array], x_T: jax.Array, key: jax.Array,
           ns: NoiseScheduleVP, diffusion=None, *, sampler: str = "ddim", steps: int = 20,
           order: int = 2) -> jax.Array:
    """Deprecated: ``samplers.sample(sampler, model, x_T, ns, steps=..., key=key)`` (fixed-small variance for
    "ddpm", as the official ``p_sample``)."""
    warn_deprecated("disentangle.sample", "samplers.sample(sampler, model, x_T, ns, steps=..., key=...)")
    return samplers.sample(sampler, model, x_T, ns, steps=steps, key=key, order=order)


def ddim_invert(model: Callable[[jax.Array, jax.Array], jax.Array], x0: jax.Array, ns: NoiseScheduleVP, *,
                steps: int = 20) -> jax.Array:
    """x_T (B, H, W, C) whose deterministic DDIM run with ``model`` returns (about) x0: DDIM's update run
    forwards in time on the time-uniform grid 1/N -> 1 of ``ns`` (``steps`` model calls)."""
    times = jnp.linspace(1.0 / ns.total_N, ns.T, steps + 1)

    def step(x, pair):
        s, t = pair
        t_input = jnp.full((x.shape[0],), ns.model_time(s))
        eps = model(x, t_input)
        alpha_s, sigma_s = ns.marginal_alpha(s), ns.marginal_std(s)
        x0_hat = (x - sigma_s * eps) / alpha_s
        return ns.marginal_alpha(t) * x0_hat + ns.marginal_std(t) * eps, None

    x_T, _ = jax.lax.scan(step, x0, (times[:-1], times[1:]))
    return x_T

