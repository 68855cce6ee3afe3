"""Sample-quality metrics: FID (Frechet distance of FID Inception-v3 pool3 statistics), Inception Score,
improved precision/recall, and the statistics files of pytorch-fid and the ADM evaluator.

    from edt_jax.metrics import create_fid_inception, load_inception_weights, inception_params_from_torch
    net = create_fid_inception()
    variables = inception_params_from_torch(load_inception_weights("pt_inception-2015-12-05-6726825d.pth"), net)
    feats = net.apply(variables, images_nhwc_in_0_1)  # (B, 2048)
    from edt_jax.metrics import image; image.ssim(clean_nhwc, degraded_nhwc, data_range=1.0)  # (B,), as skimage
    from edt_jax.metrics import lpips; lpips(clean_nhwc_in_pm1, degraded_nhwc_in_pm1, net="alex")  # (B,), v0.1
"""

from edt_jax.metrics import image  # submodule: psnr, ssim, lpips (pure jnp; LPIPS loads its weights when called)
from edt_jax.metrics.frechet import FeatureStats, StatsAccumulator, frechet_distance, load_stats, save_stats
from edt_jax.metrics.image import lpips
from edt_jax.metrics.inception import (
    FIDInceptionV3,
    create_fid_inception,
    inception_params_from_torch,
    load_fid_inception,
    load_inception_weights,
)
from edt_jax.metrics.scores import inception_score, precision_recall

__all__ = [
    "FIDInceptionV3",
    "FeatureStats",
    "StatsAccumulator",
    "create_fid_inception",
    "frechet_distance",
    "image",
    "inception_params_from_torch",
    "inception_score",
    "load_fid_inception",
    "load_inception_weights",
    "load_stats",
    "lpips",
    "precision_recall",
    "save_stats",
]
