"""Build offline ArrayRecord TFDS datasets from image folders or latent arrays, without TensorFlow.

The result is a regular prepared TFDS dataset (dataset_info.json, features.json, metadata.json and
``<name>-<split>.array_record-*`` shards in ``data_dir/<name>/1.0.0``): read it back with ``tfds.data_source(name,
split=split, data_dir=data_dir)``, ``tfds.builder_from_directory`` or ``edt_jax.data.tfds_source.open_tfds``.
Records keep the input order (files sorted by path, class by class); shuffle when reading (Grain does).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image
from tqdm import tqdm

from edt_jax import paths
from edt_jax.data.preprocess import center_crop

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VERSION = "1.0.0"
# Modes that hold one grey channel; a folder made only of these gets a 1-channel image feature.
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


class _LocalDatasetInfo(tfds.core.DatasetInfo):
    """A ``DatasetInfo`` that never looks for hosted metadata of the same name."""

    def initialize_from_bucket(self) -> None:
        # TFDS calls this while constructing a builder whose directory has no info yet. Its version makes a
        # tempfile.mkdtemp() folder before finding GCS off and never removes it: one stray /tmp folder per build.
        return None


class _ExamplesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes an iterator of ``(key, example)`` pairs as one split of a TFDS dataset.

    Not ``tfds.dataset_builders.store_as_tfds_dataset``: it checks ``isinstance(ds, tf.data.Dataset)``, importing TF.
    """

    # TFDS 4.9.10 resolves `code_path` (to look for checksums.tsv) with `importlib_resources`, which it only declares
    # as a dependency for Python < 3.9. We download nothing, so there are no checksums to find.
    code_path = None
    VERSION = tfds.core.Version(VERSION)

    def __init__(self, *, name: str, split: str, examples: Iterator[tuple[int, dict[str, Any]]], data_dir: str,
                 **info: Any):
        self.name = name  # per instance (as tfds' AdhocBuilder does): one unregistered class serves every name
        self._split, self._examples, self._info_kwargs = split, examples, info
        super().__init__(data_dir=data_dir, file_format="array_record")

    def _info(self) -> tfds.core.DatasetInfo:
        # disable_shuffling: records stay in key order, so record i is the i-th input.
        return _LocalDatasetInfo(builder=self, disable_shuffling=True, **self._info_kwargs)

    def _split_generators(self, dl_manager: Any) -> Mapping[str, Iterator[tuple[int, dict[str, Any]]]]:
        del dl_manager
        return {self._split: self._examples}

    def _generate_examples(self, **kwargs: Any) -> Iterator[tuple[int, dict[str, Any]]]:
        raise NotImplementedError  # abstract in the base class; _split_generators hands over the iterator directly

    # TFDS prints "Downloading and preparing ... Subsequent calls will reuse this data" with the scratch path;
    # misleading here, so _write logs the real destination instead.
    def _log_download_bytes(self) -> None:
        pass

    _log_download_done = _log_download_bytes


def _check_name(name: str, split: str) -> None:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"Invalid dataset name {name!r}: use lower-case letters, digits and '_', letter first")
    if name in tfds.list_builders(with_community_datasets=False):
        # tfds.data_source(name) would pick the registered builder (and its version), not our files.
        raise ValueError(f"Dataset name {name!r} is a registered TFDS dataset; choose another name")
    if not re.fullmatch(r"[A-Za-z][\w]*", split):
        raise ValueError(f"Invalid split name {split!r}: use letters, digits and '_', e.g. 'train'")


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([VERSION, *parts], default=str).encode()).hexdigest()


def _reuse(data_dir: str | os.PathLike, name: str, fingerprint: str, overwrite: bool) -> bool:
    """True if ``data_dir/name/VERSION`` already holds this very build; raises if it holds another one."""
    target = paths.as_path(data_dir) / name / VERSION
    if overwrite or not target.exists():
        return False
    meta = target / "metadata.json"  # written by TFDS from DatasetInfo(metadata=...), see _write
    stored = json.loads(meta.read_text()).get("edt_fingerprint") if meta.is_file() else None
    if stored == fingerprint:
        logging.info("Reusing TFDS dataset %r at %s (same inputs)", name, target)
        return True
    # Never build on top: TFDS' download_and_prepare would silently keep the old data.
    raise FileExistsError(f"Dataset {name!r} already exists at {target}, built from other inputs or settings; "
                          "delete it or pass overwrite=True")


def _write(name: str, data_dir: str | os.PathLike, split: str, features: tfds.features.FeaturesDict,
           examples: Iterator[tuple[int, dict[str, Any]]], description: str, fingerprint: str) -> str:
    """Writes the examples into ``data_dir/name/VERSION`` (replacing what is there); returns ``name``."""
    root = paths.as_path(data_dir)
    target = root / name / VERSION
    root.mkdir(parents=True, exist_ok=True)
    # Build in a scratch dir next to the target, then swap it in: a failed build leaves old data intact, and TFDS'
    # downloads/ folder does not litter data_dir. An object store (gs://) gets a local build, copied over after.
    remote = paths.is_url(root)
    with tempfile.TemporaryDirectory(prefix=f".{name}-build-", dir=None if remote else root) as scratch:
        metadata = tfds.core.MetadataDict(edt_fingerprint=fingerprint)
        builder = _ExamplesBuilder(name=name, split=split, examples=examples, data_dir=scratch, features=features,
                                   description=description, metadata=metadata)
        builder.download_and_prepare(
            file_format="array_record",
            # The default would ask GCS whether a hosted copy of `name` exists: no network access wanted.
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
        )
        if target.exists():
            target.rmtree()
        target.parent.mkdir(parents=True, exist_ok=True)
        built = Path(scratch) / name / VERSION
        if remote:
            for file in sorted(p for p in built.rglob("*") if p.is_file()):
                (target / file.relative_to(built)).write_bytes(file.read_bytes())
        else:
            os.replace(built, target)
    logging.info("Wrote TFDS dataset %r, split %r, to %s", name, split, target)
    return name


class _ImageFile(NamedTuple):
    path: Path
    label: int  # -1 when unlabelled
    keep_bytes: bool  # store the file as-is rather than re-encode it as PNG
    fmt: str  # PIL format and mode, e.g. "PNG", "RGB"
    mode: str
    size: tuple[int, int]  # (width, height), PIL order


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _list_images(image_dir: Path) -> tuple[list[tuple[Path, int]], list[str] | None]:
    """Returns ``[(path, label)]`` (label -1 if unlabelled) and the class names (None if unlabelled)."""
    if not image_dir.is_dir():
        raise FileNotFoundError(f"Image folder {image_dir} does not exist or is not a directory")
    entries = sorted(image_dir.iterdir())
    class_dirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    loose = [p for p in entries if _is_image(p)]
    if not class_dirs:
        return [(p, -1) for p in loose], None
    if loose:
        raise ValueError(f"{image_dir} mixes class sub-folders with {len(loose)} loose images (e.g. {loose[0].name}); "
                         "put every image in a class folder, or use a folder without sub-folders")
    files = []
    for label, class_dir in enumerate(class_dirs):
        found = sorted(p for p in class_dir.rglob("*") if _is_image(p))
        if not found:
            logging.warning("Class folder %s has no images; class %r keeps id %d", class_dir, class_dir.name, label)
        files += [(p, label) for p in found]
    return files, [p.name for p in class_dirs]


def _inspect(path: Path, label: int, resize: bool) -> _ImageFile:
    """Fully decodes the image once, so a corrupt file fails here, before anything is written."""
    try:
        with Image.open(path) as img:
            img.load()
            fmt, mode, size = img.format or "", img.mode, img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"Cannot decode image {path}: {err}".replace("\n", " ")) from err
    # An L image is kept even in an RGB dataset: the TFDS decoders repeat a grey channel to 3.
    keep = fmt in ("PNG", "JPEG") and mode in ("L", "RGB") and not resize
    return _ImageFile(path, label, keep, fmt, mode, size)


def _to_png(path: Path, mode: str, size: int | None) -> bytes:
    """Decodes ``path``, converts it to ``mode`` ('L'/'RGB'), optionally ADM-centre-crops it to size x size."""
    with Image.open(path) as img:
        img = img.convert(mode)  # drops alpha, expands palettes: TFDS' numpy decoder does no mode conversion
    if size is not None:
        # The same crop as the reading pipeline's (edt_jax.data.preprocess.center_crop), so both paths agree.
        img = Image.fromarray(center_crop(np.asarray(img), size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def build_image_folder_dataset(image_dir: str | os.PathLike, data_dir: str | os.PathLike, name: str | None = None,
                               *, split: str = "train", image_size: int | None = None,
                               overwrite: bool = False) -> str:
    """Writes a folder of images as an ArrayRecord TFDS dataset and returns its name.

    Layout: ``image_dir/<class>/**/<file>`` (classes sorted alphabetically -> label ids 0..C-1, stored as a
    ``ClassLabel`` with the folder names) or, without sub-folders, ``image_dir/<file>`` (unlabelled). Extensions:
    png/jpg/jpeg/bmp/webp, any case; hidden files and other extensions are skipped.

    Records: ``{"image": uint8 (H, W, C), "label": int64}`` (no "label" when unlabelled). C is 1 if every image is
    grey-scale, else 3. PNG/JPEG files in L/RGB mode are stored byte-for-byte; others (BMP, WebP, palette, RGBA,
    16-bit, or any image when resizing) are converted to L/RGB and re-encoded as lossless PNG.

    Args:
        image_dir: the folder to read.
        data_dir: the TFDS data dir to write into (``data_dir/<name>/1.0.0``).
        name: dataset name; defaults to the folder name in snake case.
        split: the split to write, e.g. "train". One build writes one split.
        image_size: if given, store each image ADM-centre-cropped to ``image_size`` x ``image_size``
            (``edt_jax.data.preprocess.center_crop``).
        overwrite: rebuild even if ``data_dir/<name>/1.0.0`` exists. Otherwise an existing dataset is reused when it
            was built from the same inputs and settings, and is an error when not.

    Returns:
        The dataset name, for ``tfds.data_source(name, split=split, data_dir=data_dir)``.
    """
    image_dir = Path(image_dir).expanduser()
    if name is None:
        name = re.sub(r"[^a-z0-9]+", "_", image_dir.resolve().name.lower()).strip("_")
        name = name if name[:1].isalpha() else f"ds_{name}"
    _check_name(name, split)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    size = image_size

    listed, class_names = _list_images(image_dir)
    if not listed:
        raise ValueError(f"No images ({'/'.join(e[1:] for e in IMAGE_EXTENSIONS)}) found in {image_dir}")
    # Same files (path, size, mtime), classes and settings as the dataset on disk -> reuse it without decoding.
    stats = [(os.fspath(p.relative_to(image_dir)), label, (st := p.stat()).st_size, st.st_mtime_ns)
             for p, label in listed]
    fingerprint = _fingerprint(split, size, class_names, stats)
    if _reuse(data_dir, name, fingerprint, overwrite):
        return name
    files = [_inspect(path, label, size is not None)
             for path, label in tqdm(listed, desc=f"Checking {len(listed)} images", unit="img",
                                     disable=len(listed) < 1000, mininterval=5)]
    mode = "L" if all(f.mode in _GREY_MODES for f in files) else "RGB"
    sizes = {(height, width) for width, height in (f.size for f in files)}
    # A fixed shape (resized, or all images alike) lets readers batch without padding.
    shape = (*((size, size) if size else (next(iter(sizes)) if len(sizes) == 1 else (None, None))), len(mode))
    all_jpeg = all(f.keep_bytes and f.fmt == "JPEG" for f in files)

    features = {"image": tfds.features.Image(shape=shape, encoding_format="jpeg" if all_jpeg else "png")}
    if class_names is not None:
        features["label"] = tfds.features.ClassLabel(names=class_names)

    def examples() -> Iterator[tuple[int, dict[str, Any]]]:
        for i, f in enumerate(files):
            image = f.path.read_bytes() if f.keep_bytes else _to_png(f.path, mode, size)
            yield i, {"image": image} if class_names is None else {"image": image, "label": f.label}

    description = f"Images from {image_dir.resolve()} ({len(files)} files, {len(class_names or [])} classes)."
    return _write(name, data_dir, split, tfds.features.FeaturesDict(features), examples(), description, fingerprint)


def latent_features(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tfds.features.Tensor]:
    """float32 tensor features stored as raw bytes: exact, and much faster to (de)serialise than a proto
    float_list for the 4k+ values of a latent."""
    return {key: tfds.features.Tensor(shape=tuple(shape), dtype=np.float32, encoding=tfds.features.Encoding.BYTES)
            for key, shape in shapes.items()}


def build_latent_dataset(latents: np.ndarray, labels: np.ndarray | None, data_dir: str | os.PathLike, name: str,
                         *, split: str = "train", overwrite: bool = False) -> str:
    """Writes latents (and optional integer labels) as an ArrayRecord TFDS dataset and returns its name.

    Args:
        latents: (N, ...) array, e.g. (N, 32, 32, 4); stored as float32 (a float32 input reads back bit-exactly).
        labels: (N,) integer array, or None.
        data_dir: the TFDS data dir to write into (``data_dir/<name>/1.0.0``).
        name: dataset name (lower-case letters, digits, '_').
        split: the split to write.
        overwrite: rebuild even if ``data_dir/<name>/1.0.0`` exists. Otherwise an existing dataset is reused when it
            was built from the same inputs and settings, and is an error when not.

    Returns:
        The dataset name. Records read back as ``{"latent": float32 latents.shape[1:], "label": int64 ()}``.
    """
    _check_name(name, split)
    try:
        latents = np.asarray(latents, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"latents must be a numeric array, got {type(latents).__name__}: {err}") from err
    if latents.ndim < 2 or len(latents) == 0:
        raise ValueError(f"latents must have shape (N, ...) with N > 0, got {latents.shape}")
    features = latent_features({"latent": latents.shape[1:]})
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != len(latents):
            raise ValueError(f"labels must have shape ({len(latents)},) to match latents, got {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        labels = labels.astype(np.int64)
        features["label"] = tfds.features.Scalar(dtype=np.int64)
    digest = hashlib.sha256(np.ascontiguousarray(latents).data)  # ~1 GB/s; small next to writing the records
    digest.update(b"" if labels is None else labels.data)
    fingerprint = _fingerprint(split, latents.shape, digest.hexdigest())
    if _reuse(data_dir, name, fingerprint, overwrite):
        return name

    def examples() -> Iterator[tuple[int, dict[str, Any]]]:
        for i in range(len(latents)):
            yield i, {"latent": latents[i]} if labels is None else {"latent": latents[i], "label": labels[i]}

    description = f"Latents {latents.shape} float32{' with labels' if labels is not None else ''}."
    return _write(name, data_dir, split, tfds.features.FeaturesDict(features), examples(), description, fingerprint)
