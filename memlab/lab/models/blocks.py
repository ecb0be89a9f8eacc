"""What a decoder block is built from: norms, rotary embeddings, the two attentions and the dense FFN.

Attention is causal multi-head attention through ``F.scaled_dot_product_attention`` with rotary embeddings on
``rope_fraction`` of each head's dims. MemoryFormer's attention computes Q, K and V with three ``HashMemory`` tables
that share one hash computation (``address`` once, ``read`` three times) and has no output projection (paper §2.4).
Which of these a variant uses is written in ``variants.py``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .. import flops as flops_lib
from ...layers.hash_memory import HashMemory

if TYPE_CHECKING:
    from .config import ModelConfig

INIT_STD = 0.02


def make_norm(config: ModelConfig, dim: int) -> nn.Module:
    return nn.LayerNorm(dim) if config.norm == "layer" else nn.RMSNorm(dim)


# ---------------------------------------------------------------------------------------------------------- RoPE
def rope_tables(n_pos: int, rope_dims: int, base: float, device=None, dtype=torch.float32):
    """cos, sin tables (n_pos, rope_dims/2) of rotary embeddings: angle(pos, i) = pos · base^(-2i / rope_dims)."""
    inv_freq = base ** (-torch.arange(0, rope_dims, 2, device=device, dtype=torch.float32) / rope_dims)
    angles = torch.arange(n_pos, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rope_dims: int) -> torch.Tensor:
    """Rotate the first ``rope_dims`` dims of each head (GPT-NeoX's rotate-half pairing); the rest pass through.

    x: (B, H, T, head_dim); cos, sin: (T, rope_dims/2).
    """
    if rope_dims == 0:
        return x
    rot, rest = x[..., :rope_dims], x[..., rope_dims:]
    x1, x2 = rot.chunk(2, dim=-1)
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return torch.cat([rotated, rest], dim=-1)


# ---------------------------------------------------------------------------------------------------------- attention
class CausalAttention(nn.Module):
    """Causal multi-head attention with partial RoPE; subclasses define how Q, K, V (and the output) are made."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim, self.rope_dims = config.n_heads, config.head_dim, config.rope_dims
        self.rope_base = config.rope_base

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def output(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = (t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for t in self.qkv(x))
        cos, sin = rope_tables(T, self.rope_dims, self.rope_base, device=x.device, dtype=q.dtype)
        q, k = apply_rope(q, cos, sin, self.rope_dims), apply_rope(k, cos, sin, self.rope_dims)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.output(y.transpose(1, 2).reshape(B, T, D))


class DenseAttention(CausalAttention):
    """Standard attention: Q, K, V = x W_Q, x W_K, x W_V (one fused d × 3d matrix) and the output projection W_O."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        d = config.d_model
        self.wqkv = nn.Linear(d, 3 * d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)
        nn.init.normal_(self.wqkv.weight, std=INIT_STD)
        nn.init.normal_(self.wo.weight, std=INIT_STD / (2 * config.n_layers) ** 0.5)

    def qkv(self, x):
        return self.wqkv(x).chunk(3, dim=-1)

    def output(self, y):
        return self.wo(y)

    def flops_per_token(self) -> int:
        d = self.wo.in_features
        return flops_lib.linear_flops_per_token(d, 3 * d) + flops_lib.linear_flops_per_token(d, d)


class MemoryFormerAttention(CausalAttention):
    """MemoryFormer's attention: Q, K, V from three HashMemory tables on the same input, hashed once, no W_O.

    ``q.address(x)`` gives the K row indices and weights; the three layers have equal τ, t and weighting, so
    K and V reuse them and only ``read`` differs (three weighted EmbeddingBags over three tables).
    """

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        d = config.d_model
        kw = dict(tau=config.tau, temperature=config.mf_temperature, weighting=config.mf_weighting,
                  hash_input=config.mf_hash_input)
        self.q, self.k, self.v = HashMemory(d, d, **kw), HashMemory(d, d, **kw), HashMemory(d, d, **kw)

    def qkv(self, x):
        indices, weights = self.q.address(x)  # one hash computation …
        return self.q.read(indices, weights), self.k.read(indices, weights), self.v.read(indices, weights)  # … three reads

    def flops_per_token(self) -> int:
        """Three reads of K rows of d, plus one shared computation of p(z) (~1 op per input element) and the map
        before hashing if any (``mf_hash_input``)."""
        extra = 0 if self.q.input_map is None else self.q.input_map.flops_per_token()
        return 3 * self.q.num_tables * self.q.out_features + self.q.in_features + extra


# ---------------------------------------------------------------------------------------------------------- FFNs
class FFN(nn.Module):
    """The dense FFN: W2 gelu(W1 x), hidden = ffn_mult · d (no biases)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.w2 = nn.Linear(config.ffn_hidden, config.d_model, bias=False)
        nn.init.normal_(self.w1.weight, std=INIT_STD)
        nn.init.normal_(self.w2.weight, std=INIT_STD / (2 * config.n_layers) ** 0.5)

    def forward(self, x):
        return self.w2(F.gelu(self.w1(x)))

    def flops_per_token(self) -> int:
        return 2 * flops_lib.linear_flops_per_token(self.w1.in_features, self.w1.out_features)
