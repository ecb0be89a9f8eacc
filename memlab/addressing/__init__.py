"""Addressing: turning an input x into (row indices, weights), one equation per function.

hashing.py        MemoryFormer's sign hash h(z), its bucket weight p(z) and ∂p/∂z (Ding et al. 2024, the Memory Layer)
lsh.py            random-hyperplane LSH, the theory behind sign hashing (Charikar 2002)
quantization.py   product quantization (Jégou et al. 2011), the theory behind product keys
product_keys.py   half-key scores and the exact product top-k (Lample et al. 2019)
"""
from . import hashing, lsh, product_keys, quantization

__all__ = ["hashing", "lsh", "product_keys", "quantization"]
