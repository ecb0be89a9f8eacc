"""Reading: one weighted row-gather, with its backends.

bag.py        ``embedding_bag(table, indices, weights)``: the reading primitive every memory layer ends in
hash_bag.py   ``hash_read(x, tables, tau=…)``: MemoryFormer's addressing and reading fused, equal to
              ``embedding_bag(tables, *address(x))`` up to fp32 rounding
sharded_bag.py  ``sharded_embedding_bag``: the same read over a table whose columns are spread over processes
              (memory parallelism: all-gather, local read, all-to-all)
kernels/      the backends: torch (closed-form backward), a C kernel for the CPU, Triton kernels for CUDA and the
              Triton interpreter, and the one-row teaching kernel of notebook 04
"""
from .bag import embedding_bag
from .hash_bag import hash_read

__all__ = ["embedding_bag", "hash_read"]
