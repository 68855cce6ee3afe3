"""Per-record preprocessing: ADM centre crop, horizontal flip, scaling to [-1, 1].

Records are dicts of numpy arrays as sources return them: ``image`` uint8 (H, W, C) for pixel
datasets or ``latent`` float (h, w, c) for precomputed latents (or the posterior's ``latent_mean`` and
``latent_std``, from which ``sample_latent`` draws a fresh latent every epoch), plus an optional integer
label. Outputs are dicts with float32 ``image`` (or ``latent``) and int32 ``label``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """ADM's centre crop: halve with a box filter while the short side is >= 2 size, bicubic-resize
    the short side to ``size``, then crop the centre. (H, W[, C]) uint8 -> (size, size[, C]) uint8.
    """
    if image.shape[0] == size and image.shape[1] == size:
        return image
    squeeze = image.ndim == 3 and image.shape[-1] == 1
    pil = Image.fromarray(image[..., 0] if squeeze else image)
    # Repeated 2x box downsampling avoids the aliasing a single large bicubic step would cause.
    while min(pil.size) >= 2 * size:
        pil = pil.resize(tuple(s // 2 for s in pil.size), resample=Image.Resampling.BOX)
    scale = size / min(pil.size)
    pil = pil.resize(tuple(round(s * scale) for s in pil.size), resample=Image.Resampling.BICUBIC)
    arr = np.asarray(pil)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    arr = arr[top:top + size, left:left + size]
    return arr[..., None] if squeeze else arr


class Preprocess:
    """Deterministic part of the pipeline: crop/resize, channel fix-up, [-1, 1] scaling, label.

    Args:
      image_size: output side for pixel images (None keeps the stored size; it must then be uniform).
      channels: output channels for pixel images (1 -> 3 repeats grey; None keeps them).
      label_key: record key of the class label; None (or absent in the record) gives label 0.
      latent_scale: factor applied to ``latent`` records (0.18215 for SD-VAE latents).
      keep_keys: other record fields passed through unchanged when present (e.g. the shapes
        dataset's ``factors``, which disentanglement metrics need).
    """

    def __init__(self, image_size: int | None = None, channels: int | None = None, label_key: str | None = "label",
                 latent_scale: float = 1.0, keep_keys: tuple[str, ...] = ("factors",)):
        self.image_size = image_size
        self.channels = channels
        self.label_key = label_key
        self.latent_scale = latent_scale
        self.keep_keys = keep_keys

    def __call__(self, record: dict) -> dict:
        label = record.get(self.label_key, 0) if self.label_key else 0
        out = {"label": np.asarray(label, np.int32)}
        out.update({k: np.asarray(record[k]) for k in self.keep_keys if k in record})
        latent_keys = [k for k in ("latent", "latent_mean", "latent_std") if k in record]
        if latent_keys:
            out.update({k: np.asarray(record[k], np.float32) * np.float32(self.latent_scale) for k in latent_keys})
            return out
        image = np.asarray(record["image"])
        if image.ndim == 2:
            image = image[..., None]
        if self.image_size is not None:
            image = center_crop(image, self.image_size)
        if self.channels == 3 and image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        out["image"] = image.astype(np.float32) / 127.5 - 1.0
        return out


def random_horizontal_flip(record: dict, rng: np.random.Generator) -> dict:
    """Flip the image (or latent) left-right with probability 1/2 (W is axis 1 of (H, W, C))."""
    key = "image" if "image" in record else "latent"
    if rng.random() < 0.5:
        record = {**record, key: np.ascontiguousarray(record[key][:, ::-1])}
    return record


def sample_latent(record: dict, rng: np.random.Generator) -> dict:
    """Records that store the VAE posterior (``latent_mean``, ``latent_std``) -> one ``latent`` sample of it."""
    if "latent_mean" not in record:
        return record
    record = dict(record)
    mean, std = record.pop("latent_mean"), record.pop("latent_std")
    record["latent"] = (mean + std * rng.standard_normal(mean.shape)).astype(np.float32)
    return record
