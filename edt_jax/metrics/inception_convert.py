"""PyTorch FID Inception state dicts -> Flax variables of ``FIDInceptionV3``, and the weights-file loader.

Two naming schemes are accepted (detected by the ``blocks.`` prefix):

- torchvision ``Inception3`` names, as in the public file ``pt_inception-2015-12-05-6726825d.pth``
  (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``, ..., ``fc.weight``);
- the names of ``pytorch_fid.inception.InceptionV3``, which regroups those modules into
  ``nn.Sequential`` blocks: ``blocks.0`` = [Conv2d_1a_3x3, Conv2d_2a_3x3, Conv2d_2b_3x3, MaxPool],
  ``blocks.1`` = [Conv2d_3b_1x1, Conv2d_4a_3x3, MaxPool], ``blocks.2`` = [Mixed_5b .. Mixed_6e],
  ``blocks.3`` = [Mixed_7a, Mixed_7b, Mixed_7c, AdaptiveAvgPool] (so ``blocks.2.3`` is Mixed_6a).
  This wrapper has no ``fc``.

Like ``edt_jax.models.convert``, the mapping is derived from the Flax variable tree: every variable is
looked up under its PyTorch name and checked for shape. Conv weights (out, in, kh, kw) become kernels
(kh, kw, in, out), ``fc.weight`` (1008, 2048) becomes (2048, 1008); BatchNorm ``weight``/``bias`` go to
``params`` (scale/bias) and ``running_mean``/``running_var`` to ``batch_stats`` (mean/var).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from edt_jax import paths
from edt_jax.models.convert import load_state_dict, match_state_dict, mismatch_report, strip_module_prefix

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_RELEASES = "https://github.com/mseitzer/pytorch-fid/releases"

# pytorch_fid.inception.InceptionV3 module index of each torchvision module (max pools hold no weights).
WRAPPER_PREFIX = {
    "Conv2d_1a_3x3": "blocks.0.0", "Conv2d_2a_3x3": "blocks.0.1", "Conv2d_2b_3x3": "blocks.0.2",
    "Conv2d_3b_1x1": "blocks.1.0", "Conv2d_4a_3x3": "blocks.1.1",
    **{name: f"blocks.2.{i}" for i, name in enumerate(
        ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"])},
    **{name: f"blocks.3.{i}" for i, name in enumerate(["Mixed_7a", "Mixed_7b", "Mixed_7c"])},
}

# Entries that are not needed: BN step counters, and the auxiliary classifier (training only).
IGNORED = re.compile(r"(^|\.)num_batches_tracked$|^AuxLogits\.")

_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def torch_name(path: tuple[str, ...], wrapper: bool = False) -> str:
    """Flax path -> PyTorch key: ('Mixed_5b', 'branch1x1', 'bn', 'mean') -> 'Mixed_5b.branch1x1.bn.running_mean'
    (``wrapper=True``: 'blocks.2.0.branch1x1.bn.running_mean')."""
    head = WRAPPER_PREFIX.get(path[0], path[0]) if wrapper else path[0]
    return ".".join([head, *path[1:-1], _LEAF_NAMES[path[-1]]])


def abstract_variables(net: nn.Module) -> dict:
    """Shape/dtype structs of all the network's variables (``fc`` included), without allocating them."""
    x = jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32)
    return jax.eval_shape(lambda images: net.init(jax.random.key(0), images, method="pool3_and_logits"), x)


def inception_params_from_torch(state_dict: Mapping[str, np.ndarray], net: nn.Module) -> dict:
    """Flax variables ``{"params": ..., "batch_stats": ...}`` of ``net`` from a PyTorch state dict.

    Args:
      state_dict: PyTorch name -> array (numpy, or anything ``np.asarray`` accepts); torchvision or
        pytorch_fid wrapper names (see the module docstring); a ``module.`` prefix is stripped.
        ``num_batches_tracked`` and ``AuxLogits.*`` entries are ignored. ``fc.weight``/``fc.bias`` are
        optional: when present the variables also hold the logits head.
      net: the ``FIDInceptionV3`` from ``create_fid_inception``.

    Returns float32 variables. Raises one ``ValueError`` naming every missing, mis-shaped and
    unexpected tensor.
    """
    state = strip_module_prefix(state_dict)
    wrapper = any(k.startswith("blocks.") for k in state)
    abstract = abstract_variables(net)
    if not any(k.startswith("fc.") for k in state):
        abstract = {collection: {k: v for k, v in tree.items() if k != "fc"} for collection, tree in abstract.items()}
    # Paths are (collection, module, ..., leaf); the PyTorch name leaves the collection out.
    match = match_state_dict(state, abstract, lambda path: torch_name(path[1:], wrapper), ignore=IGNORED)
    problems = mismatch_report(match)
    if problems:
        scheme = "pytorch_fid InceptionV3 (blocks.*)" if wrapper else "torchvision Inception3"
        raise ValueError(f"state dict does not fit the FID Inception-v3 with {scheme} names: {problems}")
    variables = match.nested()
    return {collection: variables.get(collection, {}) for collection in abstract}


def load_inception_weights(path: paths.PathLike) -> dict[str, np.ndarray]:
    """Read the FID Inception state dict from a local file; nothing is downloaded.

    ``path``: the ``.pth`` file (needs the ``torch`` extra), a ``.npz``/``.safetensors`` conversion of
    it, or a folder holding ``pt_inception-2015-12-05-6726825d.pth``.
    """
    path = paths.as_path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception weights {str(path)!r} not found; download {WEIGHTS_FILE} from the "
                                f"pytorch-fid GitHub releases ({WEIGHTS_RELEASES}) yourself and pass its local path "
                                f"(nothing is fetched at run time)")
    return load_state_dict(path)
