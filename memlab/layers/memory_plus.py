"""Memory+ (Memory Layers at Scale §3, arXiv 2412.09764): a product-key memory with swilu gating and qk-norm.

    Memory+(x) = W2( PKM(x) ⊙ silu(W1 x) )
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .product_key_memory import ProductKeyMemory
from .shared_values import SharedValues


class MemoryPlus(nn.Module):
    """Memory+: ``W2(y ⊙ silu(W1 x))`` around a product-key lookup y, with qk-norm and optionally shared values.

    Args:
        d_model, n_keys, heads, topk, k_dim, v_dim, values, backend, max_memory_bytes: as for ``ProductKeyMemory``.
        qk_norm: normalise queries and half-keys (default True: the paper uses it; the released code has none).

    Dtypes: as for ``ProductKeyMemory`` (and ``HashMemory``), any floating input is cast to the dtype of the layer's
    parameters and the output comes back in that dtype; convert the layer (``layer.half()``, ``layer.to(x.dtype)``)
    or use ``torch.autocast`` to compute in another precision.
    """

    def __init__(
        self,
        d_model: int,
        n_keys: int = 1024,
        heads: int = 4,
        topk: int = 32,
        k_dim: int | None = None,
        v_dim: int | None = None,
        qk_norm: bool = True,
        values: SharedValues | None = None,
        **memory_kwargs,
    ):
        super().__init__()
        self.memory = ProductKeyMemory(
            d_model, n_keys=n_keys, heads=heads, topk=topk, k_dim=k_dim, v_dim=v_dim,
            query_norm="qk" if qk_norm else None, values=values, output_projection=False, **memory_kwargs,
        )
        v_dim = self.memory.v_dim
        self.d_model, self.qk_norm = d_model, qk_norm
        self.gate_proj = nn.Linear(d_model, v_dim, bias=False)  # W1
        self.out_proj = nn.Linear(v_dim, d_model, bias=False)   # W2

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.memory.lookup(x)

    def swilu(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Memory+'s output gating: W2(y ⊙ silu(W1 x)); ``x`` is cast to W1's dtype (see the class docstring)."""
        return self.out_proj(y * F.silu(self.gate_proj(x.to(self.gate_proj.weight.dtype))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.swilu(x, self.memory(x))

    def memory_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        return self.memory.memory_bytes(dtype)

    def flops_per_token(self) -> int:
        """Counted multiply-adds: the lookup plus the two d × v_dim gating projections and the product."""
        return self.memory.flops_per_token() + 2 * self.d_model * self.memory.v_dim + self.memory.v_dim

    def extra_repr(self) -> str:
        return f"qk_norm={self.qk_norm}"
