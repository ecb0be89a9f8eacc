"""Tiny language models for memlab's training lab: one GPT-style decoder, five ways to fill its blocks.

    from memlab.models import build_model
    model = build_model("memoryformer", d_model=64, n_layers=2)
    model.report()   # params total / active, memory MB, FLOPs per token
"""
from .config import MODEL_TYPES, ModelConfig
from .gpt import GPT, Block, DenseAttention, FFN, MemoryFormerAttention, build_model, ffn_kind
from .moe import MoEFFN
from .usage import memory_layers, usage_counts, usage_statistics

__all__ = [
    "MODEL_TYPES", "ModelConfig", "GPT", "Block", "DenseAttention", "FFN", "MemoryFormerAttention", "MoEFFN",
    "build_model", "ffn_kind", "memory_layers", "usage_counts", "usage_statistics",
]
