"""edt_jax.t2i.StableDiffusion: a tiny diffusers Stable Diffusion folder draws what diffusers' pipeline drew."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from edt_jax.mesh import create_mesh
from edt_jax.t2i import StableDiffusion
from tests.reference_fixtures import FIXTURES, load_npz

FOLDER = FIXTURES / "sd_tiny_pipeline"


@pytest.fixture(scope="module")
def pipe():
    # One device: the session's 8 virtual CPU devices would pad every batch of 2 to 8.
    return StableDiffusion.from_pretrained(FOLDER, mesh=create_mesh(devices=jax.devices()[:1]))


@pytest.fixture(scope="module")
def reference():
    return load_npz("sd_tiny_pipeline/reference.npz")


@pytest.fixture(scope="module")
def embeddings(pipe, reference):
    prompts = [str(p) for p in reference["prompts"]]
    return pipe.encode_prompt(prompts), pipe.encode_prompt([str(reference["negative_prompt"])] * len(prompts))


def test_pipeline_equals_diffusers_stable_diffusion_pipeline(pipe, reference):
    images = pipe([str(p) for p in reference["prompts"]], negative_prompt=str(reference["negative_prompt"]),
                  latents=reference["latents_nhwc"], num_inference_steps=int(reference["steps"]),
                  guidance_scale=float(reference["guidance_scale"]))
    assert images.shape == reference["images"].shape and images.dtype == np.float32
    np.testing.assert_allclose(images, reference["images"], atol=1e-3, rtol=0)


def test_prompts_are_tokenized_as_diffusers_did(pipe, reference):
    np.testing.assert_array_equal(pipe.tokenize([str(p) for p in reference["prompts"]]), reference["input_ids"])


def test_per_call_scales_equal_one_static_scale(pipe, reference, embeddings):
    cond, uncond = embeddings
    steps = int(reference["steps"])
    options = dict(latents=reference["latents_nhwc"], num_inference_steps=steps)
    static = pipe.sample(cond, uncond, guidance_scale=5.0, **options)["images"]
    per_call = pipe.sample(cond, uncond, guidance_scale=np.full(steps, 5.0), **options)["images"]
    np.testing.assert_allclose(per_call, static, atol=1e-5)
    # The scales are an argument of the one compiled program: other values give other images.
    ones = pipe.sample(cond, uncond, guidance_scale=np.ones(steps), **options)["images"]
    assert np.abs(ones - static).max() > 1e-3


def test_prompt_switch_at_the_ends_is_one_prompt(pipe, reference, embeddings):
    cond, uncond = embeddings
    steps = int(reference["steps"])
    swapped = cond[::-1]
    options = dict(latents=reference["latents_nhwc"], num_inference_steps=steps, guidance_scale=5.0)
    only_a = pipe.sample(cond, uncond, **options)["images"]
    only_b = pipe.sample(swapped, uncond, **options)["images"]
    np.testing.assert_allclose(pipe.sample(cond, uncond, switch_condition=swapped, switch_after_calls=steps,
                                           **options)["images"], only_a, atol=1e-5)
    np.testing.assert_allclose(pipe.sample(cond, uncond, switch_condition=swapped, switch_after_calls=0,
                                           **options)["images"], only_b, atol=1e-5)
    middle = pipe.sample(cond, uncond, switch_condition=swapped, switch_after_calls=2, **options)["images"]
    assert np.abs(middle - only_a).max() > 1e-4 and np.abs(middle - only_b).max() > 1e-4


def test_library_sampler_and_trajectory(pipe, reference, embeddings):
    cond, uncond = embeddings
    out = pipe.sample(cond, uncond, sampler="unipc", num_inference_steps=3, guidance_scale=2.0, seed=1,
                      return_trajectory=True)
    assert out["images"].shape == (2, 32, 32, 3)
    assert 0.0 <= out["images"].min() and out["images"].max() <= 1.0
    trajectory = out["trajectory"]
    assert trajectory.x.shape == (3, 2, 16, 16, 4) and trajectory.denoised.shape == (3, 2, 16, 16, 4)
    np.testing.assert_allclose(pipe.decode(out["latents"]), out["images"], atol=1e-5)


def test_missing_folder_and_component_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        StableDiffusion.from_pretrained(tmp_path / "nowhere")
    folder = tmp_path / "sd"
    shutil.copytree(FOLDER, folder)
    shutil.rmtree(folder / "vae")
    with pytest.raises(FileNotFoundError, match="vae/"):
        StableDiffusion.from_pretrained(folder)


def test_launch_sample_pipeline_writes_the_pipelines_images(tmp_path, pipe, reference):
    # The reference's batch, steps and scale: the subprocess compiles the program the parity test compiled (the
    # suite's XLA cache is shared with subprocesses).
    output = tmp_path / "grid.png"
    prompts = [str(p) for p in reference["prompts"]]
    subprocess.run([sys.executable, "-m", "launch.sample", "--pipeline", str(FOLDER), "--prompt", prompts[0],
                    "--prompt", prompts[1], "--steps", str(int(reference["steps"])), "--guidance_scale",
                    str(float(reference["guidance_scale"])), "--seed", "2", "--output", str(output)],
                   check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True)
    assert output.is_file()
    with np.load(output.with_suffix(".npz")) as written:
        expected = pipe(prompts, num_inference_steps=int(reference["steps"]),
                        guidance_scale=float(reference["guidance_scale"]), seed=2)
        np.testing.assert_allclose(written["images"], expected, atol=1e-5)
        assert list(written["prompts"]) == prompts
