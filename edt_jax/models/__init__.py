"""Diffusion networks: EDT, the DiT baseline, their building blocks, MAC counts and weight converters.

    from edt_jax.models import create_model
    model = create_model("EDT-S/2", input_size=32, in_channels=4, num_classes=1000)
    out = model.apply(variables, x_nhwc, t, y, train=False, amm=True)
"""

from edt_jax.models.dit import DiT
from edt_jax.models.edt import EDT
from edt_jax.models.flops import count_macs
from edt_jax.models.registry import DIT_CONFIGS, EDT_CONFIGS, MODEL_NAMES, create_model

__all__ = ["DIT_CONFIGS", "DiT", "EDT", "EDT_CONFIGS", "MODEL_NAMES", "count_macs", "create_model"]
