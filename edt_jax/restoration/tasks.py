"""DP-IR's tasks on a ``configs/dpir_*.py`` config: train a network, evaluate a method, restore a folder of images.

    from edt_jax.restoration import tasks
    tasks.train(config, workdir, "ir")                  # then "fusion" (needs config.denoiser_workdir)
    result = tasks.evaluate(config, workdir, "dpir")    # PSNR / SSIM / consistency / NFE -> workdir/eval.json
    written = tasks.restore_folder(config, workdir, "degraded/", "restored/", method="dpir")

``launch.restore`` is these calls behind flags; ``build`` holds the networks and the restoration methods.
"""

from __future__ import annotations

import json
import os
import time

import ml_collections
import numpy as np
from etils import epath
from PIL import Image

from edt_jax import data as data_lib
from edt_jax import paths
from edt_jax.data.folder import IMAGE_EXTENSIONS
from edt_jax.data.pixels import save_grid, to_model_range
from edt_jax.restoration import evaluation
from edt_jax.restoration.build import Restorers, load_denoiser, load_network, network_dir, train_network
from edt_jax.restoration.data import ArraySource, build_bank, degrade, load_images
from edt_jax.restoration.degradations import create_degradation, image_keys
from edt_jax.training.loop import TrainResult
from edt_jax.training.workdir_lock import hold_workdir

__all__ = ["config_degradation", "evaluate", "read_folder", "restore_folder", "source_images", "train"]


def source_images(config: ml_collections.ConfigDict, which: str) -> np.ndarray:
    """(N, H, W, C) uint8 images of ``config.data.train`` or ``.test``, in ``<which>_range`` when given."""
    d = config.data
    source = data_lib.create_source(d[which], split=which)
    span = tuple(d.get(f"{which}_range", ()))
    images = load_images(source, span[1] if span else None)[span[0] if span else 0:]
    size, channels = d.image_size, d.channels
    if images.shape[1:] != (size, size, channels):
        raise ValueError(f"data.{which} {d[which]!r} gives {images.shape[1:]} images, the config says "
                         f"{(size, size, channels)}; set data.image_size / data.channels")
    return images


def config_degradation(config: ml_collections.ConfigDict):
    """``config.degradation``, checked against the config's image shape (one-line errors, before any tracing)."""
    degradation = create_degradation(config.degradation)
    degradation.output_shape((1, config.data.image_size, config.data.image_size, config.data.channels))
    return degradation


def train(config: ml_collections.ConfigDict, workdir, name: str) -> TrainResult:
    """Train network ``name`` (``build.NETWORKS``) into ``workdir/<name>``; the fusion net on a bank of x0_IR
    (the trained ``ir`` network's estimates of the degraded training images), into ``workdir/fusion_gaussian``
    with ``config.denoiser = "gaussian"``; the Gaussian denoiser (``"denoiser"``) on the clean images."""
    # At once, before the bank of x0_IR is computed.
    with hold_workdir(paths.as_path(workdir) / network_dir(config, name)):
        return _train(config, paths.as_path(workdir), name)


def _train(config: ml_collections.ConfigDict, workdir: epath.Path, name: str) -> TrainResult:
    degradation = config_degradation(config)
    images = source_images(config, "train")
    if name != "fusion":  # the IR nets and the conditional baseline degrade on the fly; the denoiser needs none
        return train_network(config, workdir, name, ArraySource(image=images), degradation)
    # The denoiser first: a wrong run fails before the bank is computed.
    denoiser = load_denoiser(config, images.shape[1:], workdir=workdir)
    source = build_bank(images, degradation, load_network(config, workdir, "ir")[1], seed=config.seed)
    return train_network(config, workdir, name, source, degradation, denoise=denoiser.x0_predictor(),
                         frozen=denoiser.params, frozen_ns=denoiser.schedule)


def evaluate(config: ml_collections.ConfigDict, workdir, method: str) -> dict:
    """Restore the first ``config.eval.num_test`` test images with ``method`` and score them: {"method",
    "degradation", "num_images", "psnr", "ssim", "lpips" (unless ``config.eval.lpips`` is None), "consistency"
    (means), "nfe", "seconds_per_image" (of a warm call), "sample"}, also written to ``workdir/eval.json``."""
    workdir = paths.as_path(workdir)
    degradation = config_degradation(config)
    x0 = to_model_range(source_images(config, "test")[: config.eval.num_test])
    indices = np.arange(len(x0))
    y = degrade(x0, degradation, config.seed, indices)
    restore = Restorers(config, workdir, degradation, x0.shape[1:]).get(method)
    x_hat = restore(y, indices, config.sample.seed)  # compiles on the first batch: time a second call
    start = time.perf_counter()
    x_hat = restore(y, indices, config.sample.seed)
    seconds = time.perf_counter() - start
    scores = evaluation.quality(x_hat, x0, y, degradation, image_keys(config.seed, indices),
                                lpips=config.eval.get("lpips", "alex"))
    result = {"method": method, "degradation": degradation.spec(), "num_images": len(x0),
              **{k: float(np.mean(v)) for k, v in scores.items()}, "nfe": restore.nfe,
              "seconds_per_image": seconds / len(x0), "sample": config.sample.to_dict()}
    (workdir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def read_folder(folder: epath.Path, channels: int) -> tuple[list[epath.Path], np.ndarray]:
    """(paths, (N, H, W, C) uint8) of the images in ``folder``; one-line errors when empty or unreadable."""
    if not folder.is_dir():
        raise FileNotFoundError(f"--input {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"--input {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    images = []
    for path in files:
        try:
            with path.open("rb") as f, Image.open(f) as im:
                im = im.convert("L" if channels == 1 else "RGB")
                images.append(np.asarray(im).reshape(im.size[1], im.size[0], channels))
        except OSError as err:
            raise ValueError(f"cannot read image {path}: {err}") from None
    if len({im.shape for im in images}) != 1:
        raise ValueError(f"the images in {folder} differ in size: {sorted({im.shape for im in images})}")
    return files, np.stack(images)


def restore_folder(config: ml_collections.ConfigDict, workdir, input_dir, output_dir, *, clean_input: bool = False,
                   method: str = "dpir") -> dict:
    """Restore every image of ``input_dir`` (degraded measurements, or with ``clean_input`` clean images
    degraded here first) with ``method`` into ``output_dir/<stem>.png`` (and ``<stem>_degraded.png``, the
    measurement, for clean inputs). ``output_dir`` may not be (inside) ``input_dir``.

    Returns {"method", "nfe", "num_images", "output" (the folder)}.
    """
    input_dir, output_dir = (paths.as_path(d if paths.is_url(d) else os.path.realpath(paths.expand(d)))
                             for d in (input_dir, output_dir))
    if output_dir == input_dir or input_dir in output_dir.parents:
        raise ValueError(f"--output {output_dir} is (inside) the --input folder; choose another folder, the input "
                         f"is never overwritten")
    degradation = config_degradation(config)
    files, images = read_folder(input_dir, config.data.channels)
    size = config.data.image_size
    image_shape = (size, size, config.data.channels)
    indices = np.arange(len(images))
    if clean_input:
        if images.shape[1:] != image_shape:
            raise ValueError(f"--input images are {images.shape[1:]}, the config restores {image_shape}")
        y = degrade(to_model_range(images), degradation, config.seed, indices)
    else:
        expected = degradation.output_shape((1, *image_shape))[1:]
        if images.shape[1:] != expected:
            raise ValueError(f"--input images are {images.shape[1:]}; {degradation.spec()!r} of {image_shape} "
                             f"images gives {expected}")
        y = to_model_range(images)
    restore = Restorers(config, workdir, degradation, image_shape).get(method)
    x_hat = restore(y, indices, config.sample.seed)
    output_dir.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(files):
        save_grid(x_hat[i:i + 1], output_dir / f"{path.stem}.png", columns=1)
        if clean_input:
            save_grid(y[i:i + 1], output_dir / f"{path.stem}_degraded.png", columns=1)
    return {"method": method, "nfe": restore.nfe, "num_images": len(files), "output": str(output_dir)}
