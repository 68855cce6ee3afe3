"""Stable Diffusion from a local diffusers folder, sampled in one ``jax.jit`` on the library's sampler core.

    pipe = StableDiffusion.from_pretrained("/data/stable-diffusion-v1-5")      # nothing is downloaded
    images = pipe(["a photograph of an astronaut riding a horse"], num_inference_steps=25, seed=0)
    # (1, 512, 512, 3) float32 in [0, 1], like diffusers' output_type="np"

The folder is what ``StableDiffusionPipeline.save_pretrained`` writes (the hub layout of SD 1.x / 2.x):
``model_index.json``, ``unet/``, ``text_encoder/``, ``tokenizer/``, ``vae/`` and ``scheduler/`` (a pixel-space model,
such as the library's own small text-to-image models, has ``"vae": [null, null]`` and no ``vae/``). A call encodes the
prompts (the negative prompt is the unconditional branch of classifier-free guidance), samples the latents with
the folder's scheduler config through ``samplers.diffusers_sampler`` (or any library sampler by name), and decodes
``latents / scaling_factor`` with the VAE; sampling and decoding are one compiled function, the batch sharded over
the mesh. The lower-level ``sample`` takes text embeddings directly, which the working-mechanism experiments
edit (the [EOS] study) or switch part-way (the prompt switch).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from edt_jax import paths, samplers
from edt_jax.diffusion import NoiseScheduleVP
from edt_jax.mesh import batch_devices, batch_sharding, create_mesh, replicated
from edt_jax.models.clip import load_text_encoder
from edt_jax.models.sd import load_unet
from edt_jax.models.vae import AutoencoderKL, load_vae
from edt_jax.samplers.diffusers import PREDICTION_OF_TYPE
from edt_jax.samplers.diffusers_config import alphas_cumprod, resolve_config
from edt_jax.samplers.label_switch import switch_threshold, switched_network
from edt_jax.t2i.tokenizer import CLIPTokenizer, load_tokenizer

# The sampler name that means "the folder's scheduler_config.json, step for step as diffusers runs it".
SCHEDULER = "scheduler"
COMPONENTS = ("unet", "text_encoder", "tokenizer", "vae", "scheduler")


def has_vae(folder) -> bool:
    """Whether the pipeline folder's model_index.json names a VAE (pixel-space models set it to null)."""
    entry = _read_json(paths.as_path(folder) / "model_index.json").get("vae", ["diffusers", "AutoencoderKL"])
    return bool(entry) and entry[0] is not None


def _read_json(path) -> dict:
    return json.loads(paths.as_path(path).read_text())


def check_pipeline_folder(folder: paths.PathLike):
    """The folder as a path, after checking it holds every component; a one-line error naming what is missing."""
    folder = paths.as_path(folder)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a diffusers pipeline folder: it has no model_index.json "
                                f"(expected model_index.json, {', '.join(c + '/' for c in COMPONENTS)}; download "
                                f"the model yourself, nothing is fetched at run time)")
    needed = [c for c in COMPONENTS if c != "vae" or has_vae(folder)]
    missing = [c for c in needed if not (folder / c).is_dir()]
    if missing:
        raise FileNotFoundError(f"pipeline folder {str(folder)!r} has no {', '.join(m + '/' for m in missing)} "
                                f"(a Stable Diffusion folder holds {', '.join(c + '/' for c in COMPONENTS)})")
    return folder


@dataclasses.dataclass(eq=False)
class StableDiffusion:
    """A Stable Diffusion pipeline: the networks, their parameters on the mesh, the tokenizer and the scheduler
    config. Build it with ``from_pretrained``."""

    unet: nn.Module
    unet_params: Any
    text_encoder: nn.Module
    text_params: Any
    tokenizer: CLIPTokenizer
    vae: AutoencoderKL | None  # None: a pixel-space model, whose samples are the images in [-1, 1]
    vae_params: Any
    scaling_factor: float
    scheduler_config: dict
    mesh: Mesh
    _compiled: dict = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_pretrained(cls, folder: paths.PathLike, *, dtype: str = "float32", remat: bool = False,
                        mesh: Mesh | None = None) -> StableDiffusion:
        """Load a local diffusers Stable Diffusion folder (local path or ``gs://``).

        Args:
          folder: the pipeline folder (``model_index.json``, ``unet/``, ``text_encoder/``, ``tokenizer/``,
            ``vae/``, ``scheduler/``).
          dtype: compute dtype of the networks ("float32" or "bfloat16"); parameters stay float32.
          remat: rematerialise the UNet's blocks (less memory, more compute).
          mesh: the device mesh the batch is sharded over (default: every device on the data axis).
        """
        folder = check_pipeline_folder(folder)
        dtype = jnp.dtype(dtype)
        mesh = mesh if mesh is not None else create_mesh()
        unet, unet_params = load_unet(folder / "unet", dtype=dtype, remat=remat)
        text_encoder, text_params = load_text_encoder(folder / "text_encoder", dtype=dtype)
        vae, vae_params, scaling_factor = load_vae(folder / "vae", dtype=dtype) if has_vae(folder) else (None, {}, 1.0)
        scheduler_file = folder / "scheduler" / "scheduler_config.json"
        if not scheduler_file.is_file():
            raise FileNotFoundError(f"no scheduler config at {str(scheduler_file)!r}")
        scheduler_config = _read_json(scheduler_file)
        resolve_config(scheduler_config)  # a one-line error now for a scheduler the library cannot follow
        put = replicated(mesh)
        return cls(unet, jax.device_put(unet_params, put), text_encoder, jax.device_put(text_params, put),
                   load_tokenizer(folder / "tokenizer"), vae, jax.device_put(vae_params, put), scaling_factor,
                   scheduler_config, mesh)

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def schedule(self) -> NoiseScheduleVP:
        """The training noise schedule of the scheduler config, for the library's own samplers."""
        return NoiseScheduleVP.discrete(alphas_cumprod=alphas_cumprod(resolve_config(self.scheduler_config)))

    @property
    def prediction(self) -> str:
        """What the UNet predicts (eps or v), from the scheduler config's ``prediction_type``."""
        return PREDICTION_OF_TYPE[resolve_config(self.scheduler_config)["prediction_type"]]

    def latent_shape(self, height: int | None = None, width: int | None = None) -> tuple[int, int, int]:
        """(h, w, c) of the latents of (height, width) images (default: the UNet's ``sample_size``)."""
        f = 1 if self.vae is None else self.vae.downscale
        default = (self.unet.sample_size or 64) * f
        height, width = height or default, width or default
        if height % f or width % f:
            raise ValueError(f"height and width must be multiples of {f} (the VAE's downscale), got {height}x{width}")
        return height // f, width // f, self.unet.config.in_channels

    # ------------------------------------------------------------------------------------------------------ text
    def tokenize(self, prompts: str | Sequence[str]) -> np.ndarray:
        """(B, 77) int32 token ids, padded and truncated as diffusers' pipeline does."""
        return self.tokenizer(prompts)["input_ids"]

    def encode_prompt(self, prompts: str | Sequence[str] | np.ndarray) -> jax.Array:
        """Text embeddings (B, 77, D) float32 that condition the UNet: the text encoder's ``last_hidden_state``
        of the prompts (or of token ids (B, 77))."""
        ids = np.asarray(prompts) if isinstance(prompts, np.ndarray) else self.tokenize(prompts)
        if "encode" not in self._compiled:
            self._compiled["encode"] = jax.jit(lambda p, ids: self.text_encoder.apply(
                {"params": p}, ids)["last_hidden_state"].astype(jnp.float32))
        return self._compiled["encode"](self.text_params, jnp.asarray(ids, jnp.int32))

    # -------------------------------------------------------------------------------------------------- sampling
    def call_timesteps(self, num_inference_steps: int, sampler: str = SCHEDULER) -> np.ndarray:
        """(S,) the UNet's timestep at each model call of ``sampler`` (newest noise first)."""
        if sampler == SCHEDULER:
            return samplers.diffusers_sampler(self.scheduler_config, num_inference_steps).timesteps.astype(np.float64)
        return samplers.call_timesteps(self.schedule, num_inference_steps, sampler=sampler)

    def guidance_scales(self, guidance_scale, num_inference_steps: int, *, sampler: str = SCHEDULER,
                        guided_fraction: float = 1.0, after: str = "cond"):
        """``guidance_scale`` itself when every call is guided, else the (S,) per-call scales of
        ``samplers.guidance_schedule``: the first ``guided_fraction`` of the calls, then one branch alone."""
        if guided_fraction == 1.0:
            return guidance_scale
        num_calls = len(self.call_timesteps(num_inference_steps, sampler))
        return samplers.guidance_schedule(guidance_scale, num_calls, guided_fraction, after=after)

    def _sampler(self, sampler: str, steps: int, static_scale, switch: bool, trajectory: bool):
        # A scalar guidance scale is static (a scale of exactly 1 then runs one branch); per-call scales and the
        # switch threshold are arguments, so every switch point and every schedule of scales shares one compile.
        key = (sampler, steps, static_scale, switch, trajectory)
        if key in self._compiled:
            return self._compiled[key]
        if sampler == SCHEDULER:
            run_sampler = samplers.diffusers_sampler(self.scheduler_config, steps)
        else:
            schedule, prediction = self.schedule, self.prediction

            def run_sampler(network, x_T, *, key, **kwargs):
                return samplers.sample(sampler, network, x_T, schedule, steps=steps, prediction=prediction,
                                       key=key, **kwargs)

        def run(unet_params, vae_params, cond, uncond, x_T, scales, threshold, key):
            def network(x, t, text):
                return self.unet.apply({"params": unet_params}, x, t, text)

            if switch:
                network = switched_network(network, threshold)
            # The key drives the step noise of ddpm (the ODE samplers and the scheduler ignore it).
            extra = {} if sampler == SCHEDULER else {"key": key}
            out = run_sampler(network, x_T, condition=cond, unconditional_condition=uncond, **extra,
                              guidance_scale=static_scale if scales is None else scales,
                              return_trajectory=trajectory)
            latents, traj = out if trajectory else (out, None)
            return self._to_images(vae_params, latents), latents, traj

        self._compiled[key] = jax.jit(run)
        return self._compiled[key]

    def sample(self, condition, unconditional_condition=None, *, latents: np.ndarray | None = None,
               num_inference_steps: int = 50, guidance_scale=7.5, seed: int = 0, sampler: str = SCHEDULER,
               height: int | None = None, width: int | None = None, switch_condition=None,
               switch_after_calls: int | None = None, return_trajectory: bool = False) -> dict:
        """Sample from text embeddings; the building block of ``__call__`` and the experiments.

        Args:
          condition: (B, L, D) text embeddings of the prompts.
          unconditional_condition: (B, L, D) embeddings of the negative prompt; needed unless guidance_scale is 1.
          latents: (B, h, w, c) initial noise (NHWC); default ``normal(key(seed))`` of ``latent_shape``.
          guidance_scale: a number, or one scale per model call ((S,) array: guidance windows, "guidance only in
            the first calls"); calls at exactly 0 or 1 run one branch only.
          sampler: ``"scheduler"`` (the folder's scheduler config) or a library sampler (unipc, dpm_solver, ddim,
            ddpm: its step noise is drawn from ``fold_in(key(seed), 1)``).
          switch_condition, switch_after_calls: the prompt switch: ``condition`` for the first
            ``switch_after_calls`` model calls, ``switch_condition`` (B, L, D) after (the unconditional branch
            keeps ``unconditional_condition``).
          return_trajectory: also return the ``samplers.Trajectory`` of the latents.
        Returns a dict of numpy arrays: ``images`` (B, H, W, 3) in [0, 1], ``latents`` (B, h, w, c) and, on
        request, ``trajectory``.
        """
        cond = jnp.asarray(condition, jnp.float32)
        batch = cond.shape[0]
        uncond = None if unconditional_condition is None else jnp.asarray(unconditional_condition, jnp.float32)
        threshold = None
        if switch_after_calls is not None:
            if switch_condition is None:
                raise ValueError("switch_after_calls needs switch_condition=... (the embeddings used after it)")
            threshold = jnp.float32(switch_threshold(self.call_timesteps(num_inference_steps, sampler),
                                                     switch_after_calls))
            after = jnp.asarray(switch_condition, jnp.float32)
            cond = {"before": cond, "after": after}
            uncond = None if uncond is None else {"before": uncond, "after": uncond}
        if latents is None:
            latents = jax.random.normal(jax.random.key(seed), (batch, *self.latent_shape(height, width)), jnp.float32)
        latents = jnp.asarray(latents, jnp.float32)
        if latents.ndim != 4 or latents.shape[0] != batch:
            raise ValueError(f"latents must be (B={batch}, h, w, c) NHWC, got shape {tuple(latents.shape)}")
        per_call = np.ndim(guidance_scale) == 1
        static_scale = None if per_call else float(guidance_scale)
        scales = jnp.asarray(guidance_scale, jnp.float32) if per_call else None
        run = self._sampler(sampler, num_inference_steps, static_scale, threshold is not None, return_trajectory)
        # The batch is padded to a multiple of the devices on the mesh's batch axes, and the padding cut off after.
        pad = -batch % batch_devices(self.mesh)
        sharded = jax.tree_util.tree_map(lambda a: jax.device_put(_pad(a, pad), batch_sharding(self.mesh)),
                                         (cond, uncond, latents))
        images, final, traj = run(self.unet_params, self.vae_params, *sharded, scales, threshold,
                                  jax.random.fold_in(jax.random.key(seed), 1))
        out = {"images": np.asarray(images)[:batch], "latents": np.asarray(final)[:batch]}
        if return_trajectory:
            out["trajectory"] = samplers.Trajectory(np.asarray(traj.t), np.asarray(traj.x)[:, :batch],
                                                    np.asarray(traj.denoised)[:, :batch])
        return out

    def __call__(self, prompts: str | Sequence[str], negative_prompt: str | Sequence[str] = "", *,
                 latents: np.ndarray | None = None, num_inference_steps: int = 50, guidance_scale=7.5, seed: int = 0,
                 sampler: str = SCHEDULER, height: int | None = None, width: int | None = None,
                 guided_fraction: float = 1.0, guidance_after: str = "cond", return_trajectory: bool = False):
        """Images (B, H, W, 3) float32 in [0, 1] for the prompts, as diffusers' ``pipe(..., output_type="np")``.

        ``negative_prompt`` is one string or one per prompt. ``guided_fraction`` < 1 guides only the first calls,
        then runs the conditional branch alone (``guidance_after="cond"``) or the unconditional one ("uncond",
        the "text removed" late steps). With ``return_trajectory`` the result is ``(images, Trajectory)`` of the
        latents.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        negative = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
        if len(negative) != len(prompts):
            raise ValueError(f"got {len(negative)} negative prompts for {len(prompts)} prompts; give one or one each")
        guidance_scale = self.guidance_scales(guidance_scale, num_inference_steps, sampler=sampler,
                                              guided_fraction=guided_fraction, after=guidance_after)
        out = self.sample(self.encode_prompt(prompts), self.encode_prompt(negative), latents=latents,
                          num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
                          sampler=sampler, height=height, width=width, return_trajectory=return_trajectory)
        return (out["images"], out["trajectory"]) if return_trajectory else out["images"]

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Images (B, H, W, 3) in [0, 1] of latents (B, h, w, c) as the UNet sees them (e.g. a trajectory's)."""
        if "decode" not in self._compiled:
            self._compiled["decode"] = jax.jit(self._to_images)
        return np.asarray(self._compiled["decode"](self.vae_params, jnp.asarray(latents, jnp.float32)))

    def _to_images(self, vae_params, latents: jax.Array) -> jax.Array:
        """(B, H, W, 3) in [0, 1]: the VAE decodes ``latents / scaling_factor`` (a pixel-space model's samples
        are the images in [-1, 1]), then (x / 2 + 0.5) clipped, as diffusers' output_type="np"."""
        images = latents if self.vae is None else self.vae.apply(
            {"params": vae_params}, latents / self.scaling_factor, method=self.vae.decode)
        return jnp.clip(images / 2 + 0.5, 0.0, 1.0)


def _pad(array, pad: int):
    """``array`` with its last row repeated ``pad`` times along axis 0."""
    if array is None or pad == 0:
        return array
    return jnp.concatenate([array, jnp.repeat(array[-1:], pad, axis=0)], axis=0)
