"""memlab — a lab for memory layers: MemoryFormer hash tables and product-key memories on one gather primitive.

Public API (notebooks, the CLI and external checks import exactly these names):

    embedding_bag                      the reading primitive: weighted row-gather-and-sum
    hash_read                          MemoryFormer's addressing and reading fused (= embedding_bag(T, *address(x)))
    HashMemory, MemoryBlock            MemoryFormer's Memory Layer and FFN replacement
    ProductKeyMemory, MemoryPlus,
    SharedValues                       product-key memory, Memory+, a value pool shared across layers
    ShardedValues, shard_values_,
    sharded_embedding_bag              memory parallelism: values sharded by columns over processes (torch.distributed)
    PEER                               product-key retrieval of single-neuron experts (He 2024)
    RowSparseAdam,
    clip_sparse_grad_norm_,
    split_sparse_parameters            row-sparse value training: lazy AdamW on the rows read, clipping, param split
    flops, stats, hashing,
    product_keys, lsh, quantization    paper formulas, usage statistics, the addressing equations, LSH and PQ
"""
from .lab import flops, plots, stats
from .addressing import hashing, lsh, product_keys, quantization
from .reading import embedding_bag, hash_read
from .lab.env import environment_report, fast_mode
from .layers.hash_memory import HashMemory
from .layers.memory_block import MemoryBlock
from .layers.memory_plus import MemoryPlus
from .layers.peer import PEER
from .layers.product_key_memory import ProductKeyMemory
from .layers.shared_values import SharedValues
from .layers.sharded_values import ShardedValues, shard_values_
from .reading.sharded_bag import sharded_embedding_bag
from .lab.row_sparse import RowSparseAdam, clip_sparse_grad_norm_, split_sparse_parameters

__version__ = "0.1.0"

__all__ = [
    "embedding_bag",
    "hash_read",
    "HashMemory",
    "MemoryBlock",
    "ProductKeyMemory",
    "MemoryPlus",
    "PEER",
    "SharedValues",
    "ShardedValues",
    "shard_values_",
    "sharded_embedding_bag",
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


def __getattr__(name: str):
    """``memlab.exercises`` (the notebooks' exercise checkers) is imported on first use, not with ``import memlab``."""
    if name == "exercises":
        import importlib

        return importlib.import_module(".exercises", __name__)
    raise AttributeError(f"module 'memlab' has no attribute {name!r}")
