"""Analytic multiply-accumulate counts per forward pass of one sample, as the official ``get_flops``.

The EDT paper's "GFLOPs" are these MAC counts: every matrix product contributes rows x inner x cols;
the label embedding, norms, activations, softmax and the AMM count as 0. DiT is counted with the same
rules (the EDT repository has no DiT counter), and so is MDTv2 (its repository has none): its long-skip
Linears add L x 2D x D each, and ``kept_tokens`` counts its masked training pass.
"""

from __future__ import annotations

from edt_jax.models.base import ClassConditionalTransformer
from edt_jax.models.dit import DiT
from edt_jax.models.edt import EDT
from edt_jax.models.mdt import MDTv2

FREQUENCY_EMBEDDING_SIZE = 256


def block_macs(tokens: int, hidden: int, cond_dim: int, mlp_ratio: float = 4.0) -> int:
    """adaLN + qkv + q k^T + attn @ v + proj + MLP of one transformer block on ``tokens`` tokens."""
    mlp = int(hidden * mlp_ratio)
    adaln = cond_dim * 6 * hidden
    qkv = tokens * hidden * 3 * hidden
    attention = 2 * tokens * tokens * hidden  # scores and weighted sum, summed over heads
    proj = tokens * hidden * hidden
    return adaln + qkv + attention + proj + 2 * tokens * hidden * mlp


def _embed_and_final_macs(model: ClassConditionalTransformer, hidden: int) -> int:
    """Patch embedding + t-embedder + final layer on the patch grid, with condition width ``hidden``."""
    tokens, patch, in_channels, out_channels = model.tokens, model.patch_size, model.in_channels, model.out_channels
    patch_embed = tokens * patch * patch * in_channels * hidden
    t_embed = FREQUENCY_EMBEDDING_SIZE * hidden + hidden * hidden
    final = hidden * 2 * hidden + tokens * hidden * patch * patch * out_channels
    return patch_embed + t_embed + final


def count_macs(model: EDT | DiT | MDTv2, kept_tokens: int | None = None) -> int:
    """MACs of one forward pass for one sample (e.g. 2,667,442,752 for EDT-S/2 on 32x32x4 latents).

    ``kept_tokens`` (MDTv2 only): the MACs of the masked pass whose encoder sees that many tokens
    (plus the side-interpolater block on all of them).
    """
    if isinstance(model, MDTv2):
        return _mdt_macs(model, kept_tokens)
    if kept_tokens is not None:
        raise ValueError(f"kept_tokens counts MDTv2's masked pass; {type(model).__name__} has none")
    if isinstance(model, DiT):
        tokens = model.tokens
        total = _embed_and_final_macs(model, model.hidden_size)
        return total + model.depth * block_macs(tokens, model.hidden_size, model.hidden_size, model.mlp_ratio)
    if not isinstance(model, EDT):
        raise ValueError(f"count_macs supports EDT, DiT and MDTv2 modules, got {type(model).__name__}")
    grids, dims, cond = model.stage_grids(), model.dims, model.dims[0]
    total = _embed_and_final_macs(model, cond)
    for stage, depth in enumerate(model.depths):
        tokens = grids[stage] ** 2
        total += depth * block_macs(tokens, dims[stage], cond, model.mlp_ratio)
        if stage < model.down_stages:  # down-sampling: adaLN on 4C, reduction on the merged grid
            total += cond * 8 * dims[stage] + (tokens // 4) * 4 * dims[stage] * dims[stage + 1]
        if stage > model.down_stages:  # up-sampling from the previous grid, then the long-skip fusion
            total += grids[stage - 1] ** 2 * dims[stage - 1] * 4 * dims[stage]
            total += cond * 4 * dims[stage] + tokens * 2 * dims[stage] * dims[stage]
    return total


def _mdt_macs(model: MDTv2, kept_tokens: int | None) -> int:
    tokens, hidden, half = model.tokens, model.hidden_size, model.half_depth
    encoder_tokens = tokens if kept_tokens is None else int(kept_tokens)
    if not 0 < encoder_tokens <= tokens:
        raise ValueError(f"kept_tokens must be in 1..{tokens}, got {kept_tokens}")
    total = _embed_and_final_macs(model, hidden)
    skip = 2 * hidden * hidden  # skip_linear per token
    total += 2 * half * block_macs(encoder_tokens, hidden, hidden, model.mlp_ratio) + half * encoder_tokens * skip
    total += model.decode_layer * (block_macs(tokens, hidden, hidden, model.mlp_ratio) + tokens * skip)
    if kept_tokens is not None:
        total += block_macs(tokens, hidden, hidden, model.mlp_ratio)  # the side-interpolater block
    return total
