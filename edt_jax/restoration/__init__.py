"""Image restoration (DP-IR): degradation operators y = A(x) + n, their pseudo-inverse, and the pieces that
restore x from y with a frozen restoration network, a frozen diffusion denoiser and a small fusion net.

    from edt_jax import restoration
    deg = restoration.create_degradation("sr4")               # or gaussian_blur:sigma=1.6, motion_blur:..., +noise:...
    y = deg.apply(x, restoration.image_keys(0, indices))      # x (B, H, W, C) in [-1, 1]
    model = restoration.fused_model(predict, fusion_params, denoiser_params, x0_ir)   # (x_t, t_input) -> x0
    x_hat = restoration.restore(model, x0_ir, key, ns, sampler="ddim", steps=5, tau=0.25)

DP-IR's denoiser x0_D is a library DPM (``dpir.x0_predictor``) or, as in the paper, a Gaussian denoiser
(``GaussianDenoiser``, used through ``restoration.gaussian.x0_predictor``). From a ``configs/dpir_*.py`` config:
``restoration.build`` (the networks, their training and loading, every method as a ``Restorer``) and
``restoration.tasks`` (train a network, evaluate a method, restore a folder), which ``launch/restore.py`` calls;
``docs/dpir.md`` has the results.
"""

from edt_jax.restoration.baselines import ddnm_model
from edt_jax.restoration.degradations import (
    DEGRADATION_FORMS,
    Compose,
    GaussianBlur,
    GaussianNoise,
    MotionBlur,
    SuperResolution,
    create_degradation,
    image_keys,
    null_space_project,
    pseudo_inverse,
)
from edt_jax.restoration.dpir import (
    fused_model,
    fusion_inputs,
    ir_loss,
    restore,
    start_state,
    start_timestep,
    x0_predictor,
    x0_regression_loss,
)
from edt_jax.restoration.motion_kernels import motion_kernel, motion_kernels
from edt_jax.restoration.networks import FusionNet, GaussianDenoiser, NAFNet, count_params, lift

__all__ = ["DEGRADATION_FORMS", "Compose", "FusionNet", "GaussianBlur", "GaussianDenoiser", "GaussianNoise",
           "MotionBlur", "NAFNet",
           "SuperResolution", "count_params", "create_degradation", "ddnm_model", "fused_model",
           "fusion_inputs", "image_keys", "ir_loss", "lift", "motion_kernel", "motion_kernels", "null_space_project",
           "pseudo_inverse", "restore", "start_state", "start_timestep", "x0_predictor", "x0_regression_loss"]
