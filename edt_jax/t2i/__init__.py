"""Text-to-image: Stable Diffusion from a local diffusers folder, in JAX.

    from edt_jax.t2i import StableDiffusion
    pipe = StableDiffusion.from_pretrained("/data/stable-diffusion-v1-5")
    images = pipe(["a red circle on a blue background"], num_inference_steps=25)   # (1, 512, 512, 3) in [0, 1]

``pipeline`` is the pipeline; ``tokenizer`` the CLIP tokenizer of a folder's ``tokenizer/``. The networks are
``edt_jax.models.sd`` (the UNet) and ``edt_jax.models.clip`` (the text encoder).
"""

from edt_jax.t2i.pipeline import SCHEDULER, StableDiffusion
from edt_jax.t2i.tokenizer import CLIPTokenizer, load_tokenizer

__all__ = ["SCHEDULER", "CLIPTokenizer", "StableDiffusion", "load_tokenizer"]
