"""DisDiff on the embedded shapes dataset: disentangle a frozen shapes DPM (all 7 factors) without labels.

    python -m launch.train --config configs/shapes_edt_tiny.py:full --workdir /tmp/shapes_full_dpm
    python -m launch.disentangle --config configs/shapes_disdiff.py --workdir /tmp/disdiff \\
        --dpm_workdir /tmp/shapes_full_dpm --mode train
    python -m launch.disentangle --config configs/shapes_disdiff.py --workdir /tmp/disdiff --mode evaluate
    python -m launch.disentangle --config configs/shapes_disdiff.py --workdir /tmp/disdiff --mode swap

Variants: ``:n6`` (N = 6 factor codes, the official default, instead of the 7 true factors), ``:lambda0``
(reconstruction only), ``:test`` (a few steps for the tests). The frozen DPM is a pixel-space run of
``launch.train`` (the official code works in an LDM's latent space; at 32x32 pixel space is cheaper and
needs no VAE). Numbers: docs/disdiff.md (from benchmarks/results/disentanglement_shapes_cpu.*).

``:quick`` is the setting that disentangles on a CPU (``python -m benchmarks.disentanglement --preset quick``):
the 3-factor slice ``SHAPES_HUE_POSITION`` of shapes and, as the frozen DPM, the exact closed-form DPM of its
384 images (``dpm.kind = "closed_form"``: nothing to train, no --dpm_workdir). ``:quick_smoothed`` is it against
the DPM of the images blurred by N(0, 0.3^2) (``dpm.bandwidth``), lambda 0.2. ``:quick_test`` is it in a few
steps for the tests.
"""

import ml_collections

from configs.base import disentangle_config, disentangle_test_variant
from edt_jax.data.ground_truth import SHAPES_HUE_POSITION

VARIANTS = (None, "", "n6", "lambda0", "test", "quick", "quick_smoothed", "quick_test")


def get_config(arg=None):
    if arg not in VARIANTS:
        raise ValueError(f"shapes_disdiff: unknown variant {arg!r}; use none, n6, lambda0, test, quick, "
                         f"quick_smoothed or quick_test")
    c = disentangle_config("shapes")
    c.dpm_workdir = ""  # the frozen DPM: a launch.train run on 32x32x3 shapes (or --dpm_workdir)
    # "run": the launch.train run in dpm_workdir; "closed_form": the exact DPM of the config's images under the
    # official Shapes3D schedule (LDM "linear": sqrt(beta) linear from sqrt(0.0015) to sqrt(0.0155), 1000 steps).
    # bandwidth > 0 (closed_form only): the exact DPM of the images blurred by N(0, bandwidth^2), see :quick_smoothed.
    c.dpm = ml_collections.ConfigDict(dict(kind="run", linear_start=0.0015, linear_end=0.0155, timesteps=1000,
                                           chunk_size=1024, bandwidth=0.0))
    c.model = ml_collections.ConfigDict(dict(
        name="DisDiff",
        num_factors=6 if arg == "n6" else 7,  # N code chunks; shapes has 7 true factors
        code_dim=32,  # d, as the official configs
        encoder_widths=(32, 64, 64, 128),  # stride-2 convs 32 -> 2, then a linear layer to N * d
        decoder_widths=(32, 64),  # sub-gradient decoder on 4x4 pixel blocks (the DPM's patches): 8x8 and 4x4
        patch_size=4,  # the frozen DPM's patch size; 2x2 blocks would mean four times the positions
        embed_dim=64,  # rows of the orthogonal factor embedding expm(W^T - W)
        dis_weight=0.0 if arg == "lambda0" else 0.05,  # lambda; the official README runs 0.05
        dis_weighting="x0",  # the official per-example weight (losses.WEIGHTINGS)
        train_encoder_in_dis=False,  # the official train_enc_flag (default off: a frozen encoder copy)
        reconstruction="eps",  # the official L1 on the noise ("x0": the same error in x0 units; docs/disdiff.md)
    ))
    c.total_steps = 600  # a CPU budget (docs/disdiff.md)
    # DCI on the N * d = 224 raw entries is slow (one boosted-tree fit per factor over 224 features): it runs on
    # the PCA protocol's N codes only.
    c.eval.raw_metrics = ("factor_vae", "mig")
    # 32 sources (the "what changes" table), the first grid_columns of them in the grid.
    c.swap = ml_collections.ConfigDict(dict(num_images=32, grid_columns=8, sampler="ddim", steps=20, seed=0,
                                            start="inversion"))
    if arg in ("quick", "quick_smoothed", "quick_test"):
        quick_variant(c)
    if arg == "quick_smoothed":
        # The exact DPM snaps x_t to the nearest training image early, leaving the fields nothing to predict;
        # blurring each image into N(x_i, 0.3^2 I) keeps the posterior undecided longer (docs/disdiff.md).
        c.dpm.bandwidth = 0.3
        c.model.dis_weight = 0.2
    if arg == "quick_test":
        disentangle_test_variant(c)
        c.data.source = SHAPES_HUE_POSITION
        c.model.update(dict(code_dim=4, encoder_widths=(8, 8, 8, 8), decoder_widths=(8, 8), embed_dim=8))
        c.total_steps, c.log_every_steps, c.checkpoint_every_steps = 2, 1, 2
        c.optimizer.warmup_steps = 1
        c.swap.update(dict(num_images=2, grid_columns=2, steps=2))
    if arg == "test":
        disentangle_test_variant(c)
        c.model.update(dict(code_dim=4, encoder_widths=(8, 8, 8, 8), decoder_widths=(8, 8), embed_dim=8))
        c.swap.update(dict(num_images=2, grid_columns=2, steps=2))
    return c


def quick_variant(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """DisDiff on the 3 factors of ``SHAPES_HUE_POSITION`` against their exact DPM (docs/disdiff.md)."""
    c.data.source = SHAPES_HUE_POSITION
    c.dpm.kind = "closed_form"
    c.model.num_factors = 3  # N = the true number of factors
    c.batch_size = 64
    c.total_steps = 300
    c.log_every_steps = 25
    c.checkpoint_every_steps = 100
    # The official linear warm-up (there 10,000 steps from 1e-6), scaled to the run; constant afterwards.
    c.optimizer.update(dict(schedule="linear_decay", end_learning_rate=1e-3, decay_steps=None, warmup_steps=30))
    c.eval.raw_metrics = ("factor_vae",)
    # 384 distinct images: 2,000 / 1,000 draws already repeat them; 10,000 would only slow the boosted trees.
    c.eval.dci = dict(num_train=2000, num_test=1000, batch_size=16)
    return c
