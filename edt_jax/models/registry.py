"""Named model configurations and ``create_model``, which validates every architecture argument.

Named EDT configurations follow the official ``EDT_models`` table (``*_noAMM`` variants have no AMM
blocks); named DiT configurations follow ``DiT_models``; named MDTv2 configurations follow the official
``MDTv2_*_2`` constructors (decode_layer 4, their default). ``"EDT"``, ``"DiT"`` and ``"MDTv2"`` are
free-form constructors for tiny CPU models or new layouts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp

from edt_jax.checks import check_choice, check_int
from edt_jax.models.dit import DiT
from edt_jax.models.edt import EDT
from edt_jax.models.mdt import MDTv2

EDT_CONFIGS: dict[str, dict] = {
    "EDT-S/2": dict(dims=(312, 416, 520, 416, 312), num_heads=(6, 8, 10, 8, 6), depths=(2, 2, 2, 3, 3),
                    amm_blocks=(7, 10)),
    "EDT-B/2": dict(dims=(624, 832, 1040, 832, 624), num_heads=(12, 16, 20, 16, 12), depths=(2, 2, 2, 3, 3),
                    amm_blocks=(7, 10)),
    "EDT-XL/2": dict(dims=(936, 1248, 1560, 1248, 936), num_heads=(18, 24, 30, 24, 18), depths=(6, 4, 4, 7, 7),
                     amm_blocks=(23, 25), mid_mask=True),
}
EDT_CONFIGS.update({f"{name}_noAMM": {**cfg, "amm_blocks": ()} for name, cfg in list(EDT_CONFIGS.items())})

_DIT_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}
DIT_CONFIGS: dict[str, dict] = {
    f"DiT-{size}/{patch}": dict(hidden_size=hidden, depth=depth, num_heads=heads, patch_size=patch)
    for size, (hidden, depth, heads) in _DIT_SIZES.items() for patch in (2, 4, 8)
}

MDT_CONFIGS: dict[str, dict] = {
    "MDTv2-S/2": dict(hidden_size=384, depth=12, num_heads=6),
    "MDTv2-B/2": dict(hidden_size=768, depth=12, num_heads=12),
    "MDTv2-L/2": dict(hidden_size=1024, depth=24, num_heads=16),
    "MDTv2-XL/2": dict(hidden_size=1152, depth=28, num_heads=16),
}

MODEL_NAMES = ("EDT", "DiT", "MDTv2", *EDT_CONFIGS, *DIT_CONFIGS, *MDT_CONFIGS)


def create_model(name: str, **kwargs) -> EDT | DiT | MDTv2:
    """A validated EDT, DiT or MDTv2 module.

    Args:
      name: one of ``MODEL_NAMES``: ``"EDT-S/2"``, ``"EDT-B/2"``, ``"EDT-XL/2"`` (and ``*_noAMM``),
        ``"DiT-{S,B,L,XL}/{2,4,8}"``, ``"MDTv2-{S,B,L,XL}/2"``, or the free-form ``"EDT"`` (needs
        ``dims``, ``num_heads``, ``depths``) / ``"DiT"`` and ``"MDTv2"`` (need ``hidden_size``,
        ``depth``, ``num_heads``; MDTv2 also takes ``decode_layer``, default 4).
      **kwargs: any field of the module: those all three share (``ClassConditionalTransformer``:
        ``input_size`` default 32, ``in_channels`` 4, ``num_classes`` 1000, ``learn_sigma``,
        ``class_dropout_prob``, ``amm_blocks``, ``dtype``, ``param_dtype``, ``remat``, ...) and its own.
    """
    check_choice("model name", name, MODEL_NAMES)
    cls = EDT if name.startswith("EDT") else MDTv2 if name.startswith("MDTv2") else DiT
    preset = EDT_CONFIGS.get(name) or DIT_CONFIGS.get(name) or MDT_CONFIGS.get(name) or {}
    # Required fields first (input_size, then the model's own), each group in declaration order.
    declared = [f for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]
    fields = [f.name for f in sorted(declared, key=lambda f: f.default is not dataclasses.MISSING)]
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)} for {name}; accepted: {', '.join(fields)}")
    args = {"input_size": 32, **preset, **kwargs}
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name in fields and f.default is dataclasses.MISSING and f.name not in args]
    if missing:
        raise ValueError(f"{name} needs {', '.join(missing)}")
    if cls is EDT:
        args = _validated_edt(name, args)
    elif cls is MDTv2:
        args = _validated_mdt(name, args)
    else:
        args = _validated_dit(name, args)
    return cls(**args)


def _ints(name: str, values: Sequence[int], low: int = 1) -> tuple[int, ...]:
    try:
        items = tuple(values)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of integers, got {values!r}") from None
    return tuple(check_int(f"{name}[{i}]", v, low) for i, v in enumerate(items))


def _common(name: str, args: dict, grid_divisor: int) -> dict:
    args["patch_size"] = check_int("patch_size", args.get("patch_size", 2), 1)
    args["in_channels"] = check_int("in_channels", args.get("in_channels", 4), 1)
    args["num_classes"] = check_int("num_classes", args.get("num_classes", 1000), 1)
    size = check_int("input_size", args["input_size"], 1)
    step = args["patch_size"] * grid_divisor
    if size % step:
        raise ValueError(f"input_size {size} of {name} must be divisible by {step} "
                         f"(patch {args['patch_size']} x {grid_divisor} for the stage grids)")
    if not 0.0 <= float(args.get("class_dropout_prob", 0.1)) < 1.0:
        raise ValueError(f"class_dropout_prob must be in [0, 1), got {args['class_dropout_prob']!r}")
    for key in ("dtype", "param_dtype"):
        if args.get(key) is not None:
            try:
                args[key] = jnp.dtype(args[key])
            except TypeError:
                raise ValueError(f"{key} must be a floating dtype such as 'float32' or 'bfloat16', "
                                 f"got {args[key]!r}") from None
    return args


def _validated_edt(name: str, args: dict) -> dict:
    dims, heads, depths = (_ints(k, args[k]) for k in ("dims", "num_heads", "depths"))
    if not len(dims) == len(heads) == len(depths) or len(depths) % 2 == 0:
        raise ValueError(f"dims, num_heads and depths need the same odd number of stages, got "
                         f"{len(dims)}, {len(heads)}, {len(depths)}")
    if dims != dims[::-1]:
        raise ValueError(f"dims must be symmetric (each up stage fuses the mirrored long skip), got {dims}")
    for s, (d, h) in enumerate(zip(dims, heads, strict=True)):
        if d % h or d % 4:
            raise ValueError(f"stage {s}: dims {d} must be divisible by num_heads {h} and by 4 (sin-cos embedding)")
    args.update(dims=dims, num_heads=heads, depths=depths)
    args = _common(name, args, 2 ** (len(depths) // 2))
    model_grids = EDT(input_size=args["input_size"], dims=dims, num_heads=heads, depths=depths,
                      patch_size=args["patch_size"]).stage_grids()
    block_grids = [g for g, d in zip(model_grids, depths, strict=True) for _ in range(d)]
    args["amm_blocks"] = _amm_blocks(args.get("amm_blocks", ()), block_grids)
    if args.get("mid_mask") and not 0 <= args.get("mid_mask_block", 4) < depths[0]:
        raise ValueError(f"mid_mask_block must index a block of stage 0 (depth {depths[0]}), "
                         f"got {args.get('mid_mask_block', 4)}")
    return args


def _validated_dit(name: str, args: dict) -> dict:
    hidden = check_int("hidden_size", args["hidden_size"], 4)
    heads = check_int("num_heads", args["num_heads"], 1)
    depth = check_int("depth", args["depth"], 1)
    if hidden % heads or hidden % 4:
        raise ValueError(f"hidden_size {hidden} must be divisible by num_heads {heads} and by 4")
    args = _common(name, args, 1)
    grid = args["input_size"] // args["patch_size"]
    args["amm_blocks"] = _amm_blocks(args.get("amm_blocks", ()), [grid] * depth)
    return args


def _validated_mdt(name: str, args: dict) -> dict:
    depth = check_int("depth", args["depth"], 1)
    decode_layer = check_int("decode_layer", args.get("decode_layer", 4), 0)
    if decode_layer > depth or (depth - decode_layer) % 2:
        # The official constructor silently drops a block when depth - decode_layer is odd.
        raise ValueError(f"depth - decode_layer must be even and >= 0 (the encoder's halves mirror each other), "
                         f"got depth {depth}, decode_layer {decode_layer}")
    args["decode_layer"] = decode_layer
    if not 0.0 <= float(args.get("mask_ratio", 0.3)) < 0.8:
        raise ValueError(f"mask_ratio must be in [0, 0.8) (the drawn ratio goes up to mask_ratio + 0.2), "
                         f"got {args['mask_ratio']!r}")
    args = _validated_dit(name, args)
    return args


def _amm_blocks(blocks: Sequence[int], block_grids: list[int]) -> tuple[int, ...]:
    blocks = _ints("amm_blocks", blocks, low=0)
    for b in blocks:
        if b >= len(block_grids):
            raise ValueError(f"amm_blocks entry {b} is out of range: the model has blocks 0..{len(block_grids) - 1}")
        if block_grids[b] < 3:
            raise ValueError(f"amm_blocks entry {b} runs on a {block_grids[b]}x{block_grids[b]} token grid; "
                             f"the AMM needs at least 3x3")
    return tuple(sorted(set(blocks)))
