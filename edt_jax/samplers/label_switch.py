"""Change the condition part-way through sampling: the class-label analogue of Yi et al.'s prompt switch.

The network sees label A on the first calls of a trajectory and label B on the rest. If the shape is fixed in the
first calls, samples switched late keep A's shape; switched early, they follow B. The switch is made by the
network's time input, so the stock ``samplers.model_wrapper`` (with its guidance) runs unchanged:

    threshold = switch_threshold(samplers.call_timesteps(ns, steps), num_before=4)
    net = switched_network(network, threshold)          # network(x, t_input, labels)
    model_fn = samplers.model_wrapper(net, ns, guidance_type="classifier-free",
                                      condition={"before": a, "after": b},
                                      unconditional_condition={"before": null, "after": null}, guidance_scale=2.0)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from edt_jax.checks import check_int


def switch_threshold(model_times: np.ndarray, num_before: int) -> float:
    """The network-time threshold that gives the first ``num_before`` of the calls at ``model_times`` (S,),
    strictly decreasing, the "before" condition: half-way between call num_before - 1 and call num_before,
    +inf for none (every call sees "after"), -inf for all."""
    model_times = np.asarray(model_times, np.float64)
    if model_times.ndim != 1 or np.any(np.diff(model_times) >= 0):
        raise ValueError("model_times must be a 1-D array of strictly decreasing call times")
    num_before = check_int("num_before", num_before, 0, model_times.size)
    if num_before == 0:
        return float("inf")
    if num_before == model_times.size:
        return float("-inf")
    return float(0.5 * (model_times[num_before - 1] + model_times[num_before]))


def switched_network(network: Callable, threshold: float) -> Callable:
    """``net(x, t_input, cond)`` calling ``network(x, t_input, labels)`` with ``cond["before"]`` where
    t_input > threshold and ``cond["after"]`` elsewhere, per sample (labels (B,) or pytrees of (B, ...))."""

    def net(x, t_input, cond):
        t_input = jnp.broadcast_to(t_input, (x.shape[0],))
        before = t_input > threshold

        def pick(b, a):
            return jnp.where(before.reshape((-1,) + (1,) * (jnp.ndim(b) - 1)), b, a)

        return network(x, t_input, jax.tree_util.tree_map(pick, cond["before"], cond["after"]))

    return net
