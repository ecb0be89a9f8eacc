"""MemoryFormer's Memory Block: the FFN replaced by two Memory Layers (Ding et al. 2024, Figure 3 right).

    MemoryBlock(x) = ML2( Norm( ML1(x) ) )        used as   Y = Z + MemoryBlock(Norm(Z))

ML1 maps d → (τ+e)·K so that ML2 sees K chunks of τ+e bits ("expanding bits" e; tables of 2^(τ+e) rows × d).
No activation by default: hashing is already non-linear (Table 6 finds GeLU makes no difference).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import DEFAULT_MAX_MEMORY_BYTES, check_positive_int
from .hash_memory import HashMemory, check_divisible_by_tau

ACTIVATIONS = (None, "gelu")


class MemoryBlock(nn.Module):
    """The FFN replacement: ML1 (d → (τ+e)·K), LayerNorm, optional activation, ML2 ((τ+e)·K → d).

    The residual connection and the norm in front belong to the transformer block, as they do for an FFN.

    Args:
        d_model: d; must be divisible by ``tau``.
        tau: bits per chunk of ML1 (K = d/τ tables of 2^τ rows).
        expand_bits: e; ML2 hashes K chunks of τ+e bits. The paper's default is 2.
        activation: None (paper) or "gelu" between the layers (Table 6's ablation).
        **layer_kwargs: passed to both HashMemory layers (temperature, weighting, backend, init_std).
    """

    def __init__(
        self,
        d_model: int,
        tau: int = 8,
        expand_bits: int = 2,
        activation: str | None = None,
        max_memory_bytes: float | None = DEFAULT_MAX_MEMORY_BYTES,
        **layer_kwargs,
    ):
        super().__init__()
        if isinstance(expand_bits, bool) or not isinstance(expand_bits, int) or expand_bits < 0:
            raise ValueError(f"expand_bits must be a non-negative integer, got {expand_bits!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not one of {ACTIVATIONS}")
        check_positive_int(d_model, "d_model")
        check_positive_int(tau, "tau")
        check_divisible_by_tau(d_model, tau, "d_model")
        self.d_model, self.tau, self.expand_bits, self.activation = d_model, tau, expand_bits, activation
        hidden = (tau + expand_bits) * (d_model // tau)
        self.hidden_features = hidden
        self.ml1 = HashMemory(d_model, hidden, tau=tau, max_memory_bytes=max_memory_bytes, **layer_kwargs)
        self.norm = nn.LayerNorm(hidden)
        self.ml2 = HashMemory(hidden, d_model, tau=tau + expand_bits, max_memory_bytes=max_memory_bytes, **layer_kwargs)

    @property
    def K(self) -> int:
        return self.ml1.num_tables

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.ml1(x))
        if self.activation == "gelu":
            h = F.gelu(h)
        return self.ml2(h)

    def memory_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of both layers' tables in ``dtype`` (Table 5 counts fp16 tables only, MB = 10^6 bytes)."""
        return self.ml1.memory_bytes(dtype) + self.ml2.memory_bytes(dtype)

    def flops_per_token(self) -> int:
        """Counted multiply-adds per token: both layers plus ~5 per element of the LayerNorm."""
        return self.ml1.flops_per_token() + 5 * self.hidden_features + self.ml2.flops_per_token()

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, tau={self.tau}, expand_bits={self.expand_bits}, K={self.K}"
