"""DP-IR: train the IR and fusion networks, restore images, evaluate (``configs/dpir_*.py``).

    python -m launch.restore --config configs/dpir_mnist_sr4.py --workdir DIR --mode train_ir
    python -m launch.restore --config configs/dpir_mnist_sr4.py --workdir DIR --mode train_fusion \\
        --config.denoiser_workdir=/tmp/mnist_edt
    python -m launch.restore --config configs/dpir_mnist_sr4.py --workdir DIR --mode evaluate \\
        --config.denoiser_workdir=/tmp/mnist_edt --config.sample.tau=0.25 --config.sample.steps=5
    python -m launch.restore --config ... --workdir DIR --mode restore --input degraded/ --output restored/
        # --degrade: --input holds clean images, degraded here first (both written to --output)

Modes train_ir / train_ir_alt / train_fusion / train_conditional write ``DIR/<network>/`` through the
library's one trainer (resumable, kill -9 safe); evaluate prints and writes ``DIR/eval.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags
from PIL import Image

from edt_jax import data as data_lib
from edt_jax.checks import check_choice
from edt_jax.data.folder import IMAGE_EXTENSIONS
from edt_jax.restoration import evaluation
from edt_jax.restoration.data import ArraySource, build_bank, degrade, load_images, to_model_range, to_uint8
from edt_jax.restoration.degradations import create_degradation, image_keys
from edt_jax.training.checkpoint import UnreadableCheckpointError
from launch import builders
from launch.dpir_builders import NETWORKS, Restorers, build_network, load_denoiser, load_network, train_network

MODES = ("train_ir", "train_ir_alt", "train_fusion", "train_conditional", "restore", "evaluate")

builders.define_config_flag()
builders.define_flag(flags.DEFINE_string, "workdir", None, "directory of the run's networks and results")
builders.define_flag(flags.DEFINE_enum, "mode", None, MODES, "what to do")
builders.define_flag(flags.DEFINE_string, "input", None, "restore: a folder of degraded (or, with --degrade, clean) "
                     "images")
builders.define_flag(flags.DEFINE_string, "output", None, "restore: the folder the restored PNGs go to")
builders.define_flag(flags.DEFINE_bool, "degrade", False, "restore: --input holds clean images; degrade them first")
builders.define_flag(flags.DEFINE_string, "method", "dpir", "restore / evaluate: dpir | ir | ddnm | conditional | "
                     "dpir_ir_alt")


def source_images(config, which: str) -> np.ndarray:
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


def config_degradation(config):
    """``config.degradation``, checked against the config's image shape (one-line errors, before any tracing)."""
    degradation = create_degradation(config.degradation)
    degradation.output_shape((1, config.data.image_size, config.data.image_size, config.data.channels))
    return degradation


def train_mode(config, workdir: Path, name: str):
    """Train network ``name`` (``NETWORKS``) into ``workdir/<name>``; the fusion net on a bank of x0_IR."""
    degradation = config_degradation(config)
    images = source_images(config, "train")
    if name != "fusion":  # the IR nets and the conditional baseline degrade on the fly
        return train_network(config, workdir, name, ArraySource(image=images), degradation)
    # The denoiser first: a wrong run fails before the bank is computed.
    denoise, params, _, ns = load_denoiser(config, images.shape[1:])
    source = build_bank(images, degradation, load_network(config, workdir, "ir")[1], seed=config.seed)
    return train_network(config, workdir, name, source, degradation, denoise=denoise, frozen=params, frozen_ns=ns)


def evaluate_mode(config, workdir: Path, method: str) -> dict:
    degradation = config_degradation(config)
    x0 = to_model_range(source_images(config, "test")[: config.eval.num_test])
    indices = np.arange(len(x0))
    y = degrade(x0, degradation, config.seed, indices)
    restore = Restorers(config, workdir, degradation, x0.shape[1:]).get(method)
    start = time.perf_counter()
    x_hat = restore(y, indices, config.sample.seed)  # compiles on the first batch: time a second call
    start = time.perf_counter()
    x_hat = restore(y, indices, config.sample.seed)
    seconds = time.perf_counter() - start
    scores = jax.jit(evaluation.quality, static_argnums=3)(x_hat, x0, y, degradation, image_keys(config.seed, indices))
    result = {"method": method, "degradation": degradation.spec(), "num_images": len(x0),
              **{k: float(np.mean(v)) for k, v in scores.items()}, "nfe": restore.nfe,
              "seconds_per_image": seconds / len(x0), "sample": config.sample.to_dict()}
    (workdir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
                   if k != "sample"))
    return result


def read_folder(folder: Path, channels: int) -> tuple[list[Path], np.ndarray]:
    """(paths, (N, H, W, C) uint8) of the images in ``folder``; one-line errors when empty or unreadable."""
    if not folder.is_dir():
        raise FileNotFoundError(f"--input {folder} is not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise ValueError(f"--input {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im = im.convert("L" if channels == 1 else "RGB")
                images.append(np.asarray(im).reshape(im.size[1], im.size[0], channels))
        except OSError as err:
            raise ValueError(f"cannot read image {path}: {err}") from None
    if len({im.shape for im in images}) != 1:
        raise ValueError(f"the images in {folder} differ in size: {sorted({im.shape for im in images})}")
    return paths, np.stack(images)


def restore_mode(config, workdir: Path, input_dir: Path, output_dir: Path, clean_input: bool, method: str) -> None:
    input_dir, output_dir = input_dir.expanduser().resolve(), output_dir.expanduser().resolve()
    if output_dir == input_dir or input_dir in output_dir.parents:
        raise ValueError(f"--output {output_dir} is (inside) the --input folder; choose another folder, the input "
                         f"is never overwritten")
    degradation = config_degradation(config)
    paths, images = read_folder(input_dir, config.data.channels)
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
    for path, image, measured in zip(paths, to_uint8(x_hat), to_uint8(y), strict=True):
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(output_dir / f"{path.stem}.png")
        if clean_input:
            Image.fromarray(measured.squeeze(-1) if measured.shape[-1] == 1 else measured).save(
                output_dir / f"{path.stem}_degraded.png")
    print(f"wrote {len(paths)} restored images ({method}, {restore.nfe} NFE) to {output_dir}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    builders.quiet_library_logs()
    f = flags.FLAGS
    config, workdir = f.config, Path(f.workdir).expanduser()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        if f.mode.startswith("train_"):
            name = f.mode.removeprefix("train_")
            check_choice("network", name, NETWORKS)
            build_network(config, name)  # bad architecture settings fail before any data is read
            train_mode(config, workdir, name)
        elif f.mode == "evaluate":
            evaluate_mode(config, workdir, f.method)
        else:
            if not f.input or not f.output:
                raise ValueError("--mode restore needs --input and --output folders")
            restore_mode(config, workdir, Path(f.input), Path(f.output), f.degrade, f.method)
    except (ValueError, FileNotFoundError, ImportError, UnreadableCheckpointError) as err:
        builders.exit_with_error(err)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir", "mode"])
    app.run(main)
