"""PEER, parameter-efficient expert retrieval (He 2024, "Mixture of A Million Experts", arXiv 2407.04153, §2).

A product-key memory whose n² values are single-neuron experts: expert i owns a down-row u_i and an up-row v_i.

    (scores, rows) = exact top-k over the n² product keys, per head     g = softmax(scores)   (as ProductKeyMemory)
    y = Σ_heads Σ_{i ∈ top-k} g_i · σ(u_iᵀ x) · v_i                     σ = GELU by default

σ = GELU follows the paper (§2 allows any non-linearity) and the PEER flag of Memory Layers at Scale's released code.
The up-rows are read with ONE weighted ``embedding_bag`` whose weights are g · σ(uᵀx); only the down-rows need a
plain gather. That gather materialises (tokens, heads, top-k, d) floats — a fused kernel would not.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import DEFAULT_MAX_MEMORY_BYTES
from .product_key_memory import ProductKeyMemory
from .shared_values import SharedValues

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}


class PEER(ProductKeyMemory):
    """PEER: a ``ProductKeyMemory`` (same queries, keys and ``lookup``) whose value V[i] is scaled by σ(u_iᵀ x).

    Args:
        d_model, n_keys, heads, topk, k_dim, query_norm, backend, max_memory_bytes: as for ``ProductKeyMemory``.
            Defaults follow the paper: 1024² experts, 8 heads, top-16 per head (§3). Experts map d_model → d_model.
        activation: σ, one of "gelu" (paper), "relu", "silu".

    Dtypes as for ``ProductKeyMemory``: a floating input is cast to the parameters' dtype, the output comes back in it.

    Parameters: ``query`` and ``keys`` (addressing), ``values.weight`` = the up-rows v (n², d_model) and
    ``down.weight`` = the down-rows u (n², d_model), both ``SharedValues`` initialised N(0, 1/d_model).
    """

    def __init__(
        self,
        d_model: int,
        n_keys: int = 1024,
        heads: int = 8,
        topk: int = 16,
        k_dim: int | None = None,
        query_norm: str | None = None,
        activation: str = "gelu",
        backend: str = "auto",
        max_memory_bytes: float | None = DEFAULT_MAX_MEMORY_BYTES,
    ):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not one of {tuple(ACTIVATIONS)}; 'gelu' is the paper's")
        super().__init__(d_model, n_keys=n_keys, heads=heads, topk=topk, k_dim=k_dim, v_dim=d_model,
                         query_norm=query_norm, output_projection=False, backend=backend,
                         max_memory_bytes=max_memory_bytes)
        self.activation = activation
        self.down = SharedValues(n_keys**2, d_model, max_memory_bytes)

    def expert_activations(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """σ(u_iᵀ x) of the retrieved experts, (..., H, k): x (..., d) is cast to the tables' dtype."""
        dots = self.down.row_dots(indices.flatten(-2), x).unflatten(-1, indices.shape[-2:])  # uᵀx, (..., H, k)
        return ACTIVATIONS[self.activation](dots)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        indices, g = self.lookup(x)
        return self.read(indices, g * self.expert_activations(x, indices))  # Σ g·σ(uᵀx)·v: one weighted bag

    def memory_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of both expert tables (up-rows v and down-rows u) in ``dtype``."""
        return self.values.memory_bytes(dtype) + self.down.memory_bytes(dtype)

    def flops_per_token(self) -> int:
        """``ProductKeyMemory``'s count (queries, half scores, candidate sums, the read of H·k up-rows) plus the
        H·k down-row dot products uᵀx."""
        return super().flops_per_token() + self.heads * self.topk * self.d_model

    def inactive_params(self) -> int:
        """Expert parameters a token does not touch: both rows of every expert outside its heads × top-k."""
        return 2 * (self.n_values - min(self.heads * self.topk, self.n_values)) * self.d_model

    def extra_repr(self) -> str:
        return super().extra_repr() + f", activation={self.activation!r}"
