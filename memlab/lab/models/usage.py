"""Usage statistics of every memory layer of a model on a batch (``memlab.stats``, MemoryFormer Figure 4).

One forward pass with hooks records each memory layer's input, then re-runs only its addressing step:

    layer{i}.qkv   MemoryFormer attention: the one hash shared by the Q, K and V tables (K·2^τ rows)
    layer{i}.mb1   Memory Block, first layer (K·2^τ rows)          layer{i}.mb2   second layer (K·2^(τ+e) rows)
    layer{i}.pkm   product-key memory / Memory+: rows of the shared value pool hit by this layer (all heads)
    layer{i}.peer  PEER: experts retrieved by this layer (all heads; n² rows)
    layer{i}.moe   experts chosen (top-k slots)

Which modules a variant exposes, and under which name, is part of its entry in ``variants.py``.
"""
from __future__ import annotations

import math

import torch

from .. import stats
from ...layers.hash_memory import HashMemory
from ...layers.product_key_memory import ProductKeyMemory
from .blocks import MemoryFormerAttention
from .gpt import GPT
from .moe import MoEFFN
from .variants import VARIANTS

SUMMARY_KEYS = ("fraction_used", "entropy", "kl_uniform", "gini", "top_50", "top_90", "top_99")


def memory_layers(model: GPT) -> dict[str, torch.nn.Module]:
    """name → module for every addressable memory in ``model`` (see the module docstring for names)."""
    variant = VARIANTS[model.config.model]
    found = {}
    for block in model.blocks:
        named = variant.attention_memories(block.attn)
        if block.ffn_kind != "dense":
            named = {**named, **variant.ffn_memories(block.ffn)}
        found.update({f"layer{block.layer_id}.{name}": module for name, module in named.items()})
    return found


def addressed_rows(module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(row indices (tokens, r), weights (tokens, r), rows in the memory) that ``module`` reads for each token of x:
    the K hashed rows (MemoryFormer), the heads × top-k values or experts (product keys, PEER), the top-k experts (MoE)."""
    if isinstance(module, MemoryFormerAttention):
        module = module.q  # Q, K and V share this addressing
    if isinstance(module, HashMemory):
        indices, weights = module.address(x)
        n_rows = module.tables.shape[0]
    elif isinstance(module, ProductKeyMemory):  # also PEER, a ProductKeyMemory whose values are experts
        indices, weights = module.lookup(x)
        n_rows = module.n_values
    elif isinstance(module, MoEFFN):
        indices, weights, _ = module.route(x.reshape(-1, module.d_model))
        n_rows = module.n_experts
    else:
        raise TypeError(f"no usage statistics for {type(module).__name__}")
    rows_per_token = math.prod(indices.shape[indices.dim() - (2 if isinstance(module, ProductKeyMemory) else 1):])
    return indices.reshape(-1, rows_per_token), weights.reshape(-1, rows_per_token), n_rows


def _counts(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    indices, _, n_rows = addressed_rows(module, x)
    return stats.row_counts(indices, n_rows)


@torch.no_grad()
def usage_counts(model: GPT, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Row-hit histograms (float64) of every memory layer while the model reads ``ids`` (B, T)."""
    layers = memory_layers(model)
    inputs: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_pre_hook(lambda m, args, name=name: inputs.__setitem__(name, args[0].detach()))
        for name, module in layers.items()
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():  # without autograd Memory+ takes a fused path that skips its memory's hooked forward
            model(ids)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {name: _counts(layers[name], inputs[name]) for name in layers}


def usage_statistics(model: GPT, ids: torch.Tensor) -> dict[str, dict[str, float]]:
    """``memlab.stats.usage_summary`` of every memory layer on ``ids``: {layer name: {statistic: value}}."""
    return {name: stats.usage_summary(c) for name, c in usage_counts(model, ids).items()}
