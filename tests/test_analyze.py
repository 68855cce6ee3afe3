"""launch.analyze end to end on a tiny trained run, and the generator options it rests on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from reference_fixtures import load_npz

from configs import shapes_edt_tiny

REPO = Path(__file__).resolve().parents[1]


def analyze(*flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "launch.analyze", *flags], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def test_every_analysis_on_a_tiny_run(tiny_shapes_run, tmp_path):
    out = analyze(f"--workdir={tiny_shapes_run}", "--analysis=reverse,switch,guidance",
                  f"--output_dir={tmp_path}", "--num_images=16", "--cutoffs=0.25", "--num_samples=4",
                  "--batch_size=4", "--steps=4", "--sampler=unipc", "--guidance_scale=3", "--fractions=0.5",
                  "--intervals=300:700", "--seeds=0")
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("reverse", "switch", "guidance"):
        assert (tmp_path / f"{name}.md").is_file() and (tmp_path / f"{name}.png").is_file(), name
    assert (tmp_path / "reverse_strip.png").is_file()

    reverse = json.loads((tmp_path / "reverse.json").read_text())
    assert len(reverse["timesteps"]) == 4 and reverse["timesteps"][0] == pytest.approx(999.0)
    distances = reverse["by_cutoff"]["0.25"]
    assert len(distances["low"]) == len(distances["high"]) == 4 and np.all(np.isfinite(distances["low"]))

    switch = json.loads((tmp_path / "switch.json").read_text())
    assert [r["calls_with_a"] for r in switch["rows"]] == [2]
    assert all(0 <= r["shows_a"][0] + r["shows_b"][0] <= 1 for r in switch["rows"])

    rows = {r["name"]: r for r in json.loads((tmp_path / "guidance.json").read_text())["rows"]}
    assert set(rows) == {"full guidance", "first 0.5, then cond", "first 0.5, then uncond", "t in [300, 700]"}
    assert rows["full guidance"]["l1"] == [0.0] and rows["full guidance"]["guided"] == 1.0
    assert rows["first 0.5, then uncond"]["scales"] == [3.0, 3.0, 0.0, 0.0]
    assert rows["t in [300, 700]"]["scales"] == [1.0, 1.0, 3.0, 1.0]  # calls at t = 999, 749, 500, 250
    assert rows["first 0.5, then cond"]["l1"][0] > 0  # half-guided samples differ from the guided ones


def test_forward_on_vae_latents(tiny_shapes_run, tmp_path):
    """--vae encodes the images with the run config's VAE first (here the fixture's tiny AutoencoderKL)."""
    data = load_npz("vae_tiny.npz")
    np.savez(tmp_path / "vae.npz", **{k.removeprefix("param/"): v for k, v in data.items() if k.startswith("param/")})
    config = json.loads((tiny_shapes_run / "config.json").read_text())
    config["vae"].update(block_out_channels=[int(c) for c in data["block_out_channels"]],
                         layers_per_block=int(data["layers_per_block"]), norm_num_groups=int(data["norm_num_groups"]))
    run = tmp_path / "run"
    (run / "checkpoints").parent.mkdir(parents=True)
    (run / "checkpoints").symlink_to(tiny_shapes_run / "checkpoints")
    (run / "config.json").write_text(json.dumps(config))
    out = analyze(f"--workdir={run}", "--analysis=forward", f"--output_dir={tmp_path / 'out'}", "--num_images=8",
                  f"--vae={tmp_path / 'vae.npz'}", "--cutoffs=0.25,0.5")
    assert out.returncode == 0, out.stderr[-3000:]
    forward = json.loads((tmp_path / "out" / "forward.json").read_text())
    assert "encoded by the VAE" in forward["what"]
    assert len(forward["by_cutoff"]["0.5"]["snr_low"]) == 51


def test_forward_on_an_image_folder_without_a_run_and_bad_flags(tmp_path):
    from PIL import Image

    from edt_jax.data.shapes import ShapesDataset

    shapes = ShapesDataset()
    (tmp_path / "images").mkdir()
    for i in range(16):
        Image.fromarray(np.asarray(shapes[i * 6899]["image"])).save(tmp_path / "images" / f"{i:02d}.png")
    out = analyze("--analysis=forward", f"--source=folder:{tmp_path / 'images'}", f"--output_dir={tmp_path}",
                  "--num_images=16", "--cutoffs=0.25")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "images (16 images)" in (tmp_path / "forward.md").read_text()
    assert (tmp_path / "forward.png").is_file()
    crossing = json.loads((tmp_path / "forward.json").read_text())["crossings"]["0.25"]
    assert crossing["high"] < crossing["low"]  # shapes images: high frequencies are swamped first
    bad = analyze("--analysis=forward,backward", f"--output_dir={tmp_path}")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == ("error: unknown --analysis backward; accepted: forward, reverse, "
                                                   "switch, guidance")


class _LabelledDataModel:
    """Stands in for a class-conditional network trained with x0 prediction: its x0 output is 0.1 * label."""

    input_size, in_channels, learn_sigma, num_classes = 4, 3, True, 3

    def apply(self, variables, x, t, y, **_):
        x0 = jnp.broadcast_to(0.1 * y.astype(x.dtype)[:, None, None, None], x.shape) + 0.01 * x
        return jnp.concatenate([x0, jnp.zeros_like(x)], axis=-1)


def test_generator_guidance_windows_trajectories_and_label_switch():
    from edt_jax import samplers
    from edt_jax.runs.build import build_schedule
    from edt_jax.runs.generate import make_generator
    from edt_jax.training.sharding import create_mesh

    model, mesh = _LabelledDataModel(), create_mesh()
    schedule = build_schedule(shapes_edt_tiny.get_config("test"))
    labels = np.arange(8) % 3  # the test session has 8 CPU devices
    common = dict(sampler="unipc", steps=4, order=2, amm=True, mesh=mesh, prediction="x0")
    full = samplers.guidance_schedule(3.0, 4, 1.0)
    generate = make_generator(model, schedule, guidance_scale=full, **common)
    scalar = make_generator(model, schedule, guidance_scale=3.0, **common)
    plain = make_generator(model, schedule, guidance_scale=1.0, **common)
    np.testing.assert_allclose(generate({}, labels, 1), scalar({}, labels, 1), atol=1e-5)
    # Other schedules of the same length are arguments of the same compiled sampler.
    unguided = generate({}, labels, 1, guidance_scale=samplers.guidance_schedule(3.0, 4, 0.0))
    np.testing.assert_allclose(unguided, plain({}, labels, 1), atol=1e-5)
    uncond = generate({}, labels, 1, guidance_scale=samplers.guidance_schedule(3.0, 4, 0.0, after="uncond"))
    np.testing.assert_allclose(uncond, plain({}, np.full(8, 3), 1), atol=1e-5)  # the null label alone
    with pytest.raises(ValueError, match=r"guidance_scale override of shape \(3,\) needs a generator made with"):
        generate({}, labels, 1, guidance_scale=[1.0] * 3)

    final, traj = make_generator(model, schedule, guidance_scale=1.0, return_trajectory=True, **common)(
        {}, labels, 2)
    assert isinstance(final, np.ndarray) and traj.denoised.shape == (4, 8, 4, 4, 3)
    np.testing.assert_allclose(final, plain({}, labels, 2), atol=1e-5)

    # Label A on the first 2 of 4 calls, then B; switched before the first call, B throughout.
    pairs = np.stack([labels, (labels + 1) % 3], -1)
    for calls in (0, 2):
        switched = make_generator(model, schedule, guidance_scale=1.0, label_switch_calls=calls,
                                         return_trajectory=True, **common)
        _, traj = switched({}, pairs, 3)
        x0_label = np.round(10 * (traj.denoised - 0.01 * traj.x)[:, :, 0, 0, 0]).astype(int)  # (calls, samples)
        np.testing.assert_array_equal(x0_label, [pairs[:, 0]] * calls + [pairs[:, 1]] * (4 - calls))
    with pytest.raises(ValueError, match="a label switch needs an ODE sampler"):
        make_generator(model, schedule, **dict(common, sampler="ddpm"), guidance_scale=1.0, label_switch_calls=2)
