"""Stable Diffusion in JAX against diffusers / transformers, and what a real SD UNet costs here.

    python -m benchmarks.stable_diffusion                 # parity on the tiny fixtures, tiny pipeline timing
    python -m benchmarks.stable_diffusion --sd_unet 1.5   # + one SD 1.5-shaped UNet call (random weights)

Parity: the largest absolute difference of the UNet and the CLIP text encoder to the upstream modules' outputs
stored in ``tests/fixtures/sd_tiny_public.npz``, and of the whole pipeline's images to diffusers'
``StableDiffusionPipeline`` (``tests/fixtures/sd_tiny_pipeline``), in float32. Timing: the tiny pipeline's images
per second after compiling. ``--sd_unet`` builds the UNet of the SD 1.5 (or 2.1) config with random weights and
times one guided call (batch 2 = [uncond; cond], 64x64x4 latents, 77 text tokens): its parameter count and
memory are exact, its time is this machine's. Writes ``benchmarks/results/stable_diffusion_<backend>.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.bench_utils import command_line, machine_info, md_table, time_call, write_results
from edt_jax.models import clip, sd
from edt_jax.models.vae import abstract_vae_params, create_vae
from edt_jax.t2i import StableDiffusion

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"

# The UNet configs of the public SD 1.5 and 2.1 folders (diffusers' config.json; unlisted keys at their defaults).
SD_UNET_CONFIGS = {
    "1.5": {"cross_attention_dim": 768, "attention_head_dim": 8, "sample_size": 64},
    "2.1": {"cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20], "use_linear_projection": True,
            "sample_size": 96},
}


# The text encoders of the public folders (transformers' config.json): CLIP ViT-L/14 (1.5), OpenCLIP ViT-H/14 (2.1).
SD_TEXT_CONFIGS = {
    "1.5": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
            "vocab_size": 49408, "max_position_embeddings": 77, "hidden_act": "quick_gelu"},
    "2.1": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 23,
            "vocab_size": 49408, "max_position_embeddings": 77, "hidden_act": "gelu"},
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sd_unet", choices=sorted(SD_UNET_CONFIGS), help="also time this SD version's UNet")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype of --sd_unet")
    p.add_argument("--out", default="benchmarks/results", help="results directory")
    return p.parse_args()


def parity() -> dict:
    """Max |ours - upstream| of the UNet, the text encoder's three outputs and the pipeline's images."""
    with np.load(FIXTURES / "sd_tiny_public.npz") as data:
        ref = {k: data[k] for k in data.files}
    out = {}
    unet = sd.UNet2DConditionModel(sd.unet_config_from_dict(json.loads(str(ref["unet/config"]))))
    params = sd.unet_params_from_torch({k[len("unet/state/"):]: v for k, v in ref.items()
                                        if k.startswith("unet/state/")}, unet)
    y = unet.apply({"params": params}, ref["unet/sample"].transpose(0, 2, 3, 1), ref["unet/timestep"],
                   ref["unet/encoder_hidden_states"])
    out["unet"] = float(np.abs(np.asarray(y).transpose(0, 3, 1, 2) - ref["unet/out"]).max())
    text = clip.CLIPTextModel(clip.text_config_from_dict(json.loads(str(ref["text/config"]))))
    text_params = clip.text_params_from_torch({k[len("text/state/"):]: v for k, v in ref.items()
                                               if k.startswith("text/state/")}, text)
    t = text.apply({"params": text_params}, ref["text/input_ids"])
    for name, ours, key in (("text_last_hidden_state", t["last_hidden_state"], "text/last_hidden_state"),
                            ("text_pooler_output", t["pooler_output"], "text/pooler_output"),
                            ("text_penultimate", t["hidden_states"][-2], "text/penultimate")):
        out[name] = float(np.abs(np.asarray(ours) - ref[key]).max())
    return out


def tiny_pipeline() -> dict:
    """The tiny folder's images vs diffusers', and its images per second after compiling."""
    folder = FIXTURES / "sd_tiny_pipeline"
    with np.load(folder / "reference.npz") as data:
        ref = {k: data[k] for k in data.files}
    pipe = StableDiffusion.from_pretrained(folder)
    prompts = [str(p) for p in ref["prompts"]]
    kwargs = dict(negative_prompt=str(ref["negative_prompt"]), latents=ref["latents_nhwc"],
                  num_inference_steps=int(ref["steps"]), guidance_scale=float(ref["guidance_scale"]))
    images = pipe(prompts, **kwargs)
    start = time.perf_counter()
    repeats = 5
    for _ in range(repeats):
        pipe(prompts, **kwargs)
    seconds = (time.perf_counter() - start) / repeats
    return {"pipeline_images": float(np.abs(images - ref["images"]).max()),
            "images_per_s": len(prompts) / seconds, "steps": int(ref["steps"])}


def _count(tree) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(tree))


def sd_sizes(version: str) -> dict:
    """Parameter counts of the SD folder's networks (shapes only, nothing allocated) and the float32 attention
    scores of the UNet's largest self-attention (the first block: side^2 tokens, its heads) per sample."""
    config = sd.unet_config_from_dict(SD_UNET_CONFIGS[version])
    unet = sd.abstract_unet_params(sd.UNet2DConditionModel(config))
    text = clip.abstract_text_params(clip.CLIPTextModel(clip.text_config_from_dict(SD_TEXT_CONFIGS[version])))
    vae = abstract_vae_params(create_vae())
    tokens = config.sample_size ** 2
    heads = config.num_attention_heads[0]
    return {"unet": _count(unet), "text_encoder": _count(text), "vae": _count(vae), "tokens": tokens,
            "first_block_heads": heads, "attention_scores_mib": tokens ** 2 * heads * 4 / 2**20}


def sd_unet_cost(version: str, dtype: str) -> dict:
    """Parameters, parameter memory and the time of one guided UNet call of an SD-shaped UNet."""
    config = sd.unet_config_from_dict(SD_UNET_CONFIGS[version])
    unet = sd.UNet2DConditionModel(config, dtype=jnp.dtype(dtype))
    side = config.sample_size
    x = jnp.zeros((2, side, side, 4), jnp.float32)
    context = jnp.zeros((2, 77, config.cross_attention_dim), jnp.float32)
    t = jnp.full((2,), 500, jnp.int32)
    params = jax.jit(unet.init)(jax.random.key(0), x, t, context)["params"]
    count = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    compile_s, runs = time_call(lambda p, x: unet.apply({"params": p}, x, t, context), (params, x), repeats=2)
    return {"version": version, "dtype": dtype, "parameters": count, "param_gib_float32": count * 4 / 2**30,
            "latent_side": side, "compile_s": compile_s, "guided_call_s": float(np.median(runs))}


def main() -> None:
    a = parse_args()
    errors = parity()
    pipeline = tiny_pipeline()
    errors_all = {**errors, "pipeline_images": pipeline["pipeline_images"]}
    rows = [[name, f"{value:.1e}"] for name, value in errors_all.items()]
    lines = [f"# Stable Diffusion in JAX: parity and cost, {machine_info()}", "", f"`{command_line()}`", "",
             "Max absolute difference to the upstream outputs (float32):", "",
             md_table(["output", "max abs diff"], rows), "",
             f"Tiny pipeline ({pipeline['steps']} UniPC steps, guidance, 32x32): "
             f"{pipeline['images_per_s']:.1f} images/s after compiling."]
    sizes = {version: sd_sizes(version) for version in SD_UNET_CONFIGS}
    lines += ["", "Sizes of the public SD folders' networks (parameters; float32 attention scores of the UNet's "
              "first-block self-attention per sample):", "",
              md_table(["SD", "UNet", "text encoder", "VAE", "latent tokens", "attention scores"],
                       [[v, f"{z['unet']:,}", f"{z['text_encoder']:,}", f"{z['vae']:,}", f"{z['tokens']:,}",
                         f"{z['attention_scores_mib']:,.0f} MiB"]
                        for v, z in sizes.items()])]
    payload = {"machine": machine_info(), "parity": errors, "tiny_pipeline": pipeline, "sizes": sizes}
    if a.sd_unet:
        cost = sd_unet_cost(a.sd_unet, a.dtype)
        payload["sd_unet"] = cost
        lines += ["", f"SD {cost['version']} UNet ({cost['dtype']} compute, random weights): {cost['parameters']:,} "
                  f"parameters ({cost['param_gib_float32']:.2f} GiB in float32); one guided call (batch 2, "
                  f"{cost['latent_side']}x{cost['latent_side']}x4 latents) {cost['guided_call_s']:.2f} s after "
                  f"{cost['compile_s']:.0f} s of compiling."]
    report = "\n".join(lines) + "\n"
    print(report)
    write_results(a.out, f"stable_diffusion_{jax.default_backend()}", report, payload)


if __name__ == "__main__":
    main()
