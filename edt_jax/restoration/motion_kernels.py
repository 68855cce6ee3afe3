"""Random camera-shake blur kernels: Boracchi & Foi's (2012) trajectories, as DeblurGAN generates them, in JAX.

A trajectory has a fixed number of points (2000, as in both generators), so kernel generation is jit-able:
``motion_kernels(keys, size, intensity)`` gives one (size, size) kernel per key. Used by
``degradations.MotionBlur``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

_TRAJECTORY_POINTS = 2000
_TRAJECTORY_LENGTH = 60.0  # DeblurGAN's max_len on its 64-pixel canvas; kernels are then scaled to the grid


def _trajectory_draws(key: jax.Array) -> jax.Array:
    """The random numbers of one trajectory, (N, 4) uniforms in [0, 1): row 0 the four per-trajectory scalars,
    then per step the big-shake test, the shake's turn and two more for the Gaussian kick. One draw of one
    shape keeps the (slow to compile) threefry code to a single instance."""
    return jax.random.uniform(key, (_TRAJECTORY_POINTS, 4))


def _trajectory(draws: jax.Array, intensity: float) -> jax.Array:
    """Boracchi & Foi (2012) camera-shake trajectory as in DeblurGAN's ``generate_trajectory.py``: (N, 2) (x, y).

    A particle moves with unit-normalised velocity; each step adds a Gaussian kick (weight ``gaussian_shake``),
    a pull back towards the origin (``centripetal``, the inertia towards earlier positions) and, with
    probability ``prob_big_shake * expl``, an impulsive near-reversal. ``expl`` (DeblurGAN's exploration,
    drawn there as 0.1 U(0, 1)) is 0.01 ``intensity``: 0 is straight linear motion (Boracchi & Foi's
    rectilinear blur), 0.5 DeblurGAN's recommended 0.005, 1 a crumpled scribble. ``draws`` from
    ``_trajectory_draws``.
    """
    expl = 0.01 * intensity
    step = _TRAJECTORY_LENGTH / (_TRAJECTORY_POINTS - 1)
    centripetal, prob_big_shake, gaussian_shake, angle = draws[0] * jnp.array([0.7, 0.2, 10.0, 2 * jnp.pi])
    shakes = draws[1:, 0] < prob_big_shake * expl
    turns = jnp.pi + draws[1:, 1] - 0.5
    # Box-Muller: two uniforms -> two independent standard normals (1 - u avoids log(0)).
    radius = jnp.sqrt(-2.0 * jnp.log1p(-draws[1:, 2]))
    gauss = radius[:, None] * jnp.stack([jnp.cos(2 * jnp.pi * draws[1:, 3]), jnp.sin(2 * jnp.pi * draws[1:, 3])], -1)
    v0 = jnp.stack([jnp.cos(angle), jnp.sin(angle)])
    v0 = v0 * (expl if expl > 0 else step)  # DeblurGAN's start; only the first step's mix depends on it

    def move(carry, inputs):
        x, v = carry
        shake, turn, g = inputs
        c, s = jnp.cos(turn), jnp.sin(turn)
        reverse = 2.0 * jnp.stack([c * v[0] - s * v[1], s * v[0] + c * v[1]])  # 2 v e^{i turn}
        v = v + jnp.where(shake, reverse, 0.0) + expl * (gaussian_shake * g - centripetal * x) * step
        v = v / jnp.maximum(jnp.linalg.norm(v), 1e-12) * step
        return (x + v, v), x + v

    _, xs = lax.scan(move, (jnp.zeros(2), v0), (shakes, turns, gauss))
    return jnp.concatenate([jnp.zeros((1, 2)), xs])


def _splat(xy: jax.Array, size: int) -> jax.Array:
    """(N, 2) trajectory -> (size, size) kernel, scaled, centred and bilinearly splatted (see motion_kernel)."""
    low, high = xy.min(axis=0), xy.max(axis=0)
    scale = (size - 1) / jnp.maximum((high - low).max(), 1e-6)
    xy = (xy - (low + high) / 2) * scale + (size - 1) / 2
    grid = jnp.arange(size, dtype=jnp.float32)
    hat = jnp.maximum(0.0, 1.0 - jnp.abs(xy[:, :, None] - grid))  # (N, 2, size)
    k = jnp.matmul(hat[:, 1].T, hat[:, 0], precision=lax.Precision.HIGHEST)
    return k / k.sum()


def motion_kernel(key: jax.Array, size: int, intensity: float) -> jax.Array:
    """One (size, size) float32 motion-blur kernel (row = y, column = x), non-negative, summing to 1.

    The trajectory is scaled so its bounding box's long side spans the grid, so ``size`` is the blur extent
    whatever the shake (DeblurGAN's fixed path length would shrink shaky kernels to a few pixels), centred,
    then bilinearly splatted (DeblurGAN's ``triangle_fun`` weights, full exposure). Splatting is the product
    of per-axis hat weights, so it is one matmul instead of a scatter.
    """
    return _splat(_trajectory(_trajectory_draws(key), intensity), size)


def motion_kernels(keys: jax.Array, size: int, intensity: float) -> jax.Array:
    """(B,) keys -> (B, size, size) kernels, ``motion_kernel`` of each key.

    The random draws go through a sequential ``lax.map``, the trajectories through ``vmap``: batched threefry
    compiles ~5x slower on CPU (2.5 s against 0.5 s measured), while the draws are cheap to run in sequence.
    """
    draws = lax.map(_trajectory_draws, keys)
    return jax.vmap(lambda d: _splat(_trajectory(d, intensity), size))(draws)
