"""Tiny language models for memlab's training lab: one GPT-style decoder, its blocks filled by a registry of variants.

    from memlab.lab.models import build_model, VARIANTS
    model = build_model("memoryformer", d_model=64, n_layers=2)
    model.report()   # params total / active, memory MB, FLOPs per token
    {name: v.description for name, v in VARIANTS.items()}   # dense, moe, memoryformer, pkm, memoryplus, peer

Adding a variant is one ``Variant`` entry in ``variants.py`` plus its layer module.
"""
from .blocks import DenseAttention, FFN, MemoryFormerAttention
from .config import ModelConfig
from .gpt import GPT, Block, build_model
from .moe import MoEFFN
from .usage import memory_layers, usage_counts, usage_statistics
from .variants import MODEL_TYPES, VARIANTS, Variant, ffn_kind

__all__ = [
    "MODEL_TYPES", "VARIANTS", "Variant", "ModelConfig", "GPT", "Block", "DenseAttention", "FFN",
    "MemoryFormerAttention", "MoEFFN", "build_model", "ffn_kind", "memory_layers", "usage_counts", "usage_statistics",
]
