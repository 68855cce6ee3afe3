"""edt_jax.analysis: the frequency split and radial power, the forward-process bands, band settling, label switch."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edt_jax import samplers
from edt_jax.analysis import forward, frequency, label_switch, reverse
from edt_jax.diffusion import DiscreteDiffusion, NoiseScheduleVP, beta_schedule


def _cosine_image(height, width, ky, kx, channels=2):
    """(1, H, W, C) cos(2 pi (ky y / H + kx x / W)): a single DFT frequency pair (+/-) of radius known exactly."""
    y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    wave = np.cos(2 * np.pi * (ky * y / height + kx * x / width))
    return np.repeat(wave[None, :, :, None], channels, -1).astype(np.float32)


def test_split_is_an_exact_real_decomposition():
    x = jax.random.normal(jax.random.key(0), (3, 16, 12, 3))
    for cutoff in (0.0, 0.1, 0.37, 1.0):
        low, high = frequency.split(x, cutoff)
        assert low.dtype == high.dtype == jnp.float32 and low.shape == x.shape
        np.testing.assert_allclose(low + high, x, atol=1e-6)
    low, _ = frequency.split(x, 0.3)
    np.testing.assert_allclose(frequency.split(low, 0.3)[0], low, atol=1e-5)  # a projection
    np.testing.assert_allclose(jnp.sum(low * (x - low)), 0.0, atol=1e-3)     # orthogonal bands


@pytest.mark.parametrize("ky,kx,radius", [(2, 0, 0.25), (0, 3, 0.375), (4, 4, math.sqrt(2) * 0.5), (8, 0, 1.0)])
def test_a_cosine_lands_in_the_band_of_its_radius(ky, kx, radius):
    wave = _cosine_image(16, 16, ky, kx)
    below, above = radius - 0.01, radius + 0.01
    low, high = frequency.split(wave, min(above, 1.0))
    np.testing.assert_allclose(low, wave, atol=1e-5)
    np.testing.assert_allclose(high, 0.0, atol=1e-5)
    low, high = frequency.split(wave, below)
    np.testing.assert_allclose(low, 0.0, atol=1e-5)
    np.testing.assert_allclose(high, wave, atol=1e-5)


def test_cutoff_edges():
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    low, _ = frequency.split(x, 0.0)  # only the mean of each channel
    np.testing.assert_allclose(low, jnp.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape), atol=1e-6)
    checkerboard = _cosine_image(8, 8, 4, 4)   # both axes at Nyquist: radius sqrt(2), outside the disc
    low, high = frequency.split(checkerboard, 1.0)
    np.testing.assert_allclose(low, 0.0, atol=1e-6)
    np.testing.assert_allclose(high, checkerboard, atol=1e-6)
    stripes = _cosine_image(8, 8, 4, 0)        # one axis at Nyquist: radius 1, inside
    np.testing.assert_allclose(frequency.split(stripes, 1.0)[0], stripes, atol=1e-6)


def test_split_is_jittable_with_a_traced_cutoff():
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 1))
    traced = jax.jit(frequency.split)(x, 0.4)
    np.testing.assert_allclose(traced[0], frequency.split(x, 0.4)[0], atol=1e-6)


def test_radial_power_obeys_parseval_and_bins_by_radius():
    x = jax.random.normal(jax.random.key(3), (4, 16, 16, 3))
    power = frequency.radial_power(x, 10)
    assert power.shape == (4, 10)
    np.testing.assert_allclose(power.sum(-1), jnp.sum(x**2, axis=(1, 2, 3)), rtol=1e-5)
    per_channel = frequency.radial_power(x, 10, per_channel=True)
    assert per_channel.shape == (4, 10, 3)
    np.testing.assert_allclose(per_channel.sum(-1), power, rtol=1e-5)
    wave = _cosine_image(16, 16, 0, 4, channels=1)  # radius 0.5: band floor(0.5 / sqrt(2) * 10) = 3
    band_power = frequency.radial_power(wave, 10)[0]
    assert int(jnp.argmax(band_power)) == 3
    np.testing.assert_allclose(band_power[3], float(np.sum(wave**2)), rtol=1e-5)
    edges = frequency.radial_bin_edges(10)
    assert edges[3] <= 0.5 < edges[4]


@pytest.mark.parametrize("call,message", [
    (lambda: frequency.split(np.zeros((8, 8, 3)), 0.5),
     r"x must be an NHWC batch \(B, H, W, C\), got shape \(8, 8, 3\)"),
    (lambda: frequency.split(np.zeros((1, 8, 8, 3)), 1.5),
     r"cutoff must be a fraction of the Nyquist radius in \[0, 1\], got 1.5"),
    (lambda: frequency.split(np.zeros((1, 8, 8, 3)), -0.1), r"in \[0, 1\], got -0.1"),
    (lambda: frequency.split(np.zeros((1, 8, 8, 3)), float("nan")), r"in \[0, 1\], got nan"),
    (lambda: frequency.split(np.zeros((1, 8, 8, 3)), [0.1, 0.2]), r"in \[0, 1\], got \[0.1, 0.2\]"),
    (lambda: frequency.radial_power(np.zeros((1, 8, 8)), 4), r"x must be an NHWC batch"),
    (lambda: frequency.radial_power(np.zeros((1, 8, 8, 1)), 0), r"num_bins must be an integer >= 1, got 0"),
])
def test_bad_arguments_are_one_line_errors(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_forward_bands_high_frequencies_are_swamped_first():
    # Smooth images (power at low frequencies) under the linear-beta forward process.
    y, x = np.meshgrid(np.linspace(-1, 1, 16), np.linspace(-1, 1, 16), indexing="ij")
    rng = np.random.default_rng(0)
    centres = rng.uniform(-0.5, 0.5, (8, 2))
    x0 = np.stack([np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 0.2) for cy, cx in centres])[..., None] * 2 - 1
    diffusion = DiscreteDiffusion.from_betas(beta_schedule("linear", 1000))
    timesteps = np.arange(0, 1000, 50)
    stats = forward.forward_bands(x0, diffusion.alphas_cumprod, timesteps, 0.25, jax.random.key(0), num_bins=8)
    assert stats["snr_low"].shape == (20,) and stats["radial_snr"].shape == (20, 8)
    assert np.all(np.diff(stats["snr_low"]) < 0) and np.all(stats["snr_low"] > stats["snr_high"])
    t_high = forward.crossing_timestep(timesteps, stats["snr_high"])
    t_low = forward.crossing_timestep(timesteps, stats["snr_low"])
    assert t_high is not None and t_low is not None and t_high < t_low
    # The noise is white: its low band holds the share of frequencies inside the disc.
    rho = frequency.radius(16, 16)
    share = np.mean(rho <= 0.25)
    np.testing.assert_allclose(stats["noise_low"] / stats["sigma"], np.sqrt(share), rtol=0.15)
    np.testing.assert_allclose(stats["signal_low"] ** 2 + stats["signal_high"] ** 2,
                               stats["alpha"] ** 2 * np.mean(x0**2), rtol=1e-4)
    assert stats["low_power_fraction"] > 0.9
    assert forward.crossing_timestep(timesteps, np.full(20, 10.0)) is None


def test_band_distances_and_settling():
    rng = np.random.default_rng(1)
    final = jnp.asarray(rng.standard_normal((3, 8, 8, 1)), jnp.float32)
    low, high = frequency.split(final, 0.3)
    # The low band arrives at call 2, the high band at call 4.
    weights_low, weights_high = np.array([0, 0.5, 0.95, 1, 1, 1]), np.array([0, 0, 0, 0.5, 0.95, 1])
    denoised = jnp.stack([a * low + b * high for a, b in zip(weights_low, weights_high, strict=True)])
    d = reverse.band_distances(denoised, final, 0.3)
    np.testing.assert_allclose(d["low"], 1 - weights_low, atol=1e-5)
    np.testing.assert_allclose(d["high"], 1 - weights_high, atol=1e-5)
    assert reverse.settling_call(d["low"]) == 2 and reverse.settling_call(d["high"]) == 4
    assert reverse.settling_call(np.array([0.5, 0.05, 0.2])) is None
    assert reverse.settling_call(np.array([0.05, 0.01])) == 0


def test_label_switch_at_a_call():
    ns = NoiseScheduleVP.discrete(betas=np.linspace(1e-4, 0.02, 1000))
    times = ns.model_time(samplers.call_times(ns, 6))
    seen = []

    def network(x, t_input, labels):
        jax.debug.callback(lambda lab: seen.append(int(lab[0])), labels)
        return jnp.zeros_like(x)

    for num_before in (0, 2, 6):
        seen.clear()
        net = label_switch.switched_network(network, label_switch.switch_threshold(times, num_before))
        fn = samplers.model_wrapper(net, ns, guidance_type="classifier-free",
                                    condition={"before": jnp.array([1]), "after": jnp.array([2])})
        samplers.ddim(fn, jnp.ones((1, 3)), ns, steps=6)
        jax.effects_barrier()
        assert seen == [1] * num_before + [2] * (6 - num_before)
    with pytest.raises(ValueError, match=r"num_before must be an integer in \[0, 6\], got 7"):
        label_switch.switch_threshold(times, 7)
