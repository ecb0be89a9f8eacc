"""memlab — a lab for memory layers: MemoryFormer hash tables and product-key memories on one gather primitive.

Public API (notebooks, the CLI and external checks import exactly these names):

    embedding_bag                      the reading primitive: weighted row-gather-and-sum
    HashMemory, MemoryBlock            MemoryFormer's Memory Layer and FFN replacement
    ProductKeyMemory, MemoryPlus,
    SharedValues                       product-key memory, Memory+, a value pool shared across layers
    RowSparseAdam,
    clip_sparse_grad_norm_,
    split_sparse_parameters            row-sparse value training: lazy AdamW on the rows read, clipping, param split
    flops, stats, hashing,
    product_keys, lsh, quantization    paper formulas, usage statistics, the addressing equations, LSH and PQ
"""
from . import flops, hashing, lsh, product_keys, quantization, stats
from .embedding_bag import embedding_bag
from .env import environment_report, fast_mode
from .hash_memory import HashMemory
from .memory_block import MemoryBlock
from .memory_plus import MemoryPlus
from .pkm import ProductKeyMemory, SharedValues
from .row_sparse import RowSparseAdam, clip_sparse_grad_norm_, split_sparse_parameters

__version__ = "0.1.0"

__all__ = [
    "embedding_bag",
    "HashMemory",
    "MemoryBlock",
    "ProductKeyMemory",
    "MemoryPlus",
    "SharedValues",
    "RowSparseAdam",
    "clip_sparse_grad_norm_",
    "split_sparse_parameters",
    "flops",
    "stats",
    "hashing",
    "product_keys",
    "lsh",
    "quantization",
    "fast_mode",
    "environment_report",
]
