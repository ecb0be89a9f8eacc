"""Layers: addressing followed by reading, as nn.Modules.

hash_memory.py          MemoryFormer's Memory Layer (Ding et al. 2024, Figure 3 left)
hash_input.py           what a Memory Layer hashes: x (the paper), a fixed random rotation of x, or x centred (memlab's)
memory_block.py         MemoryFormer's Memory Block, the FFN replacement (Figure 3 right)
product_key_memory.py   product-key memory (Lample et al. 2019; Memory Layers at Scale)
shared_values.py        a value table shared by several product-key layers (Memory Layers at Scale, shared memory)
sharded_values.py       the same table with its columns spread over processes (Memory Layers at Scale, parallel memory)
memory_plus.py          Memory+: swilu gating and qk-norm around a product-key lookup (Memory Layers at Scale, Memory+)
peer.py                 PEER: product-key retrieval of single-neuron experts (He 2024, Mixture of A Million Experts, arXiv 2407.04153)
"""
from .hash_memory import HashMemory
from .memory_block import MemoryBlock
from .memory_plus import MemoryPlus
from .peer import PEER
from .product_key_memory import ProductKeyMemory
from .shared_values import SharedValues
from .sharded_values import ShardedValues, shard_values_

__all__ = ["HashMemory", "MemoryBlock", "MemoryPlus", "PEER", "ProductKeyMemory", "SharedValues", "ShardedValues",
           "shard_values_"]
