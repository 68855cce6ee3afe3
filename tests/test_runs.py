"""A trained run as a library object: load_run, Run.sample (= launch.sample), the frozen network, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

import edt_jax
from edt_jax.runs import build
from edt_jax.training import sharding
from edt_jax.training.step import model_example
from edt_jax.training.train_state import load_state, model_init

REPO = Path(__file__).resolve().parents[1]
OPTIONS = dict(labels=[0, 1, 2], steps=3, seed=5, guidance_scale=2.0)


@pytest.fixture(scope="module")
def run(tiny_shapes_run):
    return edt_jax.load_run(tiny_shapes_run)


def test_load_run_reads_the_parameters_alone(run, tiny_shapes_run):
    """The EMA (or raw) parameters equal those of the whole restored train state, without building an optimizer."""
    config = build.read_config(tiny_shapes_run)
    state, step = load_state(tiny_shapes_run / "checkpoints", model_init(run.model, model_example(run.model)),
                             build.build_optimizer(config), sharding.create_mesh())
    assert run.step == step == 2 and run.use_ema and run.prediction == config.loss.prediction
    assert run.image_shape == (32, 32, 3) and not run.is_latent
    jax.tree.map(np.testing.assert_array_equal, run.params, state.ema_params)
    raw = edt_jax.load_run(tiny_shapes_run, use_ema=False)
    jax.tree.map(np.testing.assert_array_equal, raw.params, state.params)
    assert len(jax.tree.leaves(run.params)[0].sharding.device_set) == jax.device_count()  # on every device


def test_sample_from_outside_the_repository_equals_launch_sample(tiny_shapes_run, tmp_path):
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-m", "launch.sample", f"--workdir={tiny_shapes_run}", "--labels=0,1,2",
                          "--num_samples=3", "--steps=3", "--seed=5", "--guidance_scale=2",
                          f"--output={tmp_path / 'grid.png'}"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "wrote 3 samples (step 2, EMA parameters)" in out.stdout
    script = textwrap.dedent(f"""
        import numpy as np, edt_jax
        run = edt_jax.load_run({str(tiny_shapes_run)!r})
        np.save("library.npy", run.sample(**{OPTIONS!r}))
    """)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    lib = subprocess.run([sys.executable, "-c", script], cwd=outside, env=env, capture_output=True, text=True,
                         timeout=600)
    assert lib.returncode == 0, lib.stderr[-3000:]
    written = np.load(tmp_path / "grid.npz")
    np.testing.assert_array_equal(np.load(outside / "library.npy"), written["samples"])
    np.testing.assert_array_equal(written["labels"], [0, 1, 2])
    assert (tmp_path / "grid.png").is_file()


def test_sample_counts_batches_and_trajectories(run):
    one = run.sample(**OPTIONS)
    assert one.shape == (3, 32, 32, 3) and one.dtype == np.float32
    assert run.generator(steps=3, guidance_scale=2.0) is run.generator(steps=3, guidance_scale=2.0)  # compiled once
    pixels = run.sample(**OPTIONS, as_uint8=True)
    np.testing.assert_array_equal(pixels, np.clip(np.round((one + 1) * 127.5), 0, 255).astype(np.uint8))
    batched = run.sample(labels=[0, 1], num_samples=11, steps=3, batch_size=8)  # labels cycled, two batches
    assert batched.shape == (11, 32, 32, 3) and np.all(np.isfinite(batched))
    np.testing.assert_array_equal(batched[:8], run.sample(labels=[0, 1], num_samples=8, steps=3, batch_size=8))
    final, traj = run.sample(**OPTIONS, return_trajectory=True)
    np.testing.assert_allclose(final, one, atol=1e-6)
    assert traj.denoised.shape == (3, 3, 32, 32, 3) and traj.t.shape == (3,)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got \[0, 9\]"):
        run.sample(labels=[0, 9], steps=3)
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        run.sample(labels=[0], steps=3, sampler="euler")


def test_ddpm_guides_like_every_other_sampler(run):
    """Guidance on every call equals the scalar scale; guiding call 0 alone lies between; scale 1 is unguided."""
    # Two training steps leave the labels nearly unused: a large scale makes guidance visible.
    options = {**OPTIONS, "guidance_scale": 300.0}
    for sampler in ("ddpm",):  # the ODE samplers' guidance: test_analyze, test_sampler_jax
        scalar = run.sample(**options, sampler=sampler)
        early = run.sample(**options, sampler=sampler, guided_fraction=1 / 3)  # guide call 0 only
        off = run.sample(**{**options, "guidance_scale": 1.0}, sampler=sampler)
        assert np.max(np.abs(scalar - off)) > 1e-3 and np.max(np.abs(early - off)) > 1e-4
        assert np.max(np.abs(scalar - early)) > 1e-4
        per_call = run.generator(sampler=sampler, steps=3, guidance_scale=np.full(3, 300.0))
        np.testing.assert_allclose(per_call(run.params, np.resize(OPTIONS["labels"], 8), 5)[:3], scalar[:3],
                                   atol=1e-5)


def test_the_frozen_network_as_x0_and_eps_predictor(run):
    x_t = jax.random.normal(jax.random.key(0), (2, *run.image_shape))
    t_input = np.array([100.0, 700.0], np.float32)
    x0 = run.x0_predictor()(run.params, x_t, t_input)
    eps = run.noise_predictor()(run.params, x_t, t_input)
    t = run.schedule.continuous_time(t_input)
    alpha = run.schedule.marginal_alpha(t).reshape(-1, 1, 1, 1)
    sigma = run.schedule.marginal_std(t).reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(x0, (x_t - sigma * eps) / alpha, rtol=1e-4, atol=1e-4)
    run.check_image_shape((32, 32, 3))
    with pytest.raises(ValueError, match=r"was trained on \(32, 32, 3\) images, this config restores \(16, 16, 3\)"):
        run.check_image_shape((16, 16, 3))


def test_load_run_errors_are_one_line(tmp_path, tiny_shapes_run):
    with pytest.raises(FileNotFoundError, match="config.json not found; is .* a launch.train workdir"):
        edt_jax.load_run(tmp_path / "nothing")
    (tmp_path / "no_ckpt").mkdir()
    (tmp_path / "no_ckpt" / "config.json").write_text((tiny_shapes_run / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no checkpoints in .*: the directory does not exist"):
        edt_jax.load_run(tmp_path / "no_ckpt")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 7 .* available steps: \[2\]"):
        edt_jax.load_run(tiny_shapes_run, step=7)
