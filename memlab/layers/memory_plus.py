"""Memory+ (Memory Layers at Scale §3, arXiv 2412.09764): a product-key memory with swilu gating and qk-norm.

    Memory+(x) = W2( PKM(x) ⊙ silu(W1 x) )

Without a gradient on fp32 CPU tensors the query projection W_q and the gate projection W1, which both read x, run as
one matrix product against [W_q; W1] (concatenated once and cached, keyed on both parameters' versions and storage),
then the product-key lookup's fast path (``ProductKeyMemory``) and the C bag: the same numbers up to fp32 rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_float_input
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
        memory = self.memory
        if (torch.is_grad_enabled() and any(p.requires_grad for p in (memory.query.weight, self.gate_proj.weight,
                                                                       memory.keys, memory.values.weight))) \
                or memory.query_norm == "batch" or not memory._fast_path(x) \
                or self.gate_proj.weight.dtype != torch.float32:
            return self.swilu(x, memory(x))
        check_float_input(x, self.d_model, type(self).__name__)
        q, gate = F.linear(x.to(torch.float32), self._query_gate_weight()).split(
            [memory.heads * memory.k_dim, memory.v_dim], dim=-1)
        y = memory._read_fast(*memory._lookup_queries(memory._shape_queries(q)))
        return self.out_proj(y * F.silu(gate))

    def _query_gate_weight(self) -> torch.Tensor:
        """[W_q; W1] (H·k_dim + v_dim, d): both projections of x in one product; cached, rebuilt when either
        parameter changes (version or storage)."""
        wq, w1 = self.memory.query.weight, self.gate_proj.weight
        tag = (wq._version, wq.data_ptr(), w1._version, w1.data_ptr(), wq.device)
        cache = self.__dict__.get("_query_gate_cache")
        if cache is None or cache[0] != tag:
            with torch.inference_mode(False), torch.no_grad():
                cache = (tag, torch.cat([wq.detach(), w1.detach()]))
            self.__dict__["_query_gate_cache"] = cache
        return cache[1]

    def memory_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        return self.memory.memory_bytes(dtype)

    def flops_per_token(self) -> int:
        """Counted multiply-adds: the lookup plus the two d × v_dim gating projections and the product."""
        return self.memory.flops_per_token() + 2 * self.d_model * self.memory.v_dim + self.memory.v_dim

    def extra_repr(self) -> str:
        return f"qk_norm={self.qk_norm}"
