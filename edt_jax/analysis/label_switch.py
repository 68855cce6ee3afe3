"""The label switch lives in ``edt_jax.samplers.label_switch`` (a sampling-time condition); kept here by name."""

from edt_jax.samplers.label_switch import switch_threshold, switched_network

__all__ = ["switch_threshold", "switched_network"]
