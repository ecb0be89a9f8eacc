"""A readable GPT-style decoder whose blocks are swapped by ``ModelConfig.model`` (see ``config.py``).

    x = tok_emb(ids)
    for each block:   x = x + Attn(Norm(x));   x = x + FFN(Norm(x))        (pre-norm; FFN may be a memory)
    logits = head(Norm(x))                                                (head tied to tok_emb by default)

Attention is causal multi-head attention through ``F.scaled_dot_product_attention`` with rotary embeddings on
``rope_fraction`` of each head's dims. MemoryFormer's attention computes Q, K and V with three ``HashMemory`` tables
that share one hash computation (``address`` once, ``read`` three times) and has no output projection (paper §2.4).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import flops as flops_lib
from ..hash_memory import HashMemory
from ..memory_block import MemoryBlock
from ..memory_plus import MemoryPlus
from ..pkm import ProductKeyMemory, SharedValues
from .config import ModelConfig
from .moe import MoEFFN

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
        kw = dict(tau=config.tau, temperature=config.mf_temperature, weighting=config.mf_weighting)
        self.q, self.k, self.v = HashMemory(d, d, **kw), HashMemory(d, d, **kw), HashMemory(d, d, **kw)

    def qkv(self, x):
        indices, weights = self.q.address(x)  # one hash computation …
        return self.q.read(indices, weights), self.k.read(indices, weights), self.v.read(indices, weights)  # … three reads

    def flops_per_token(self) -> int:
        """Three reads of K rows of d, plus one shared computation of p(z) (~1 op per input element)."""
        return 3 * self.q.num_tables * self.q.out_features + self.q.in_features


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


class Block(nn.Module):
    """Pre-norm block: x + Attn(Norm(x)), then + FFN(Norm(x)) where FFN is dense, MoE, a MemoryBlock or a memory."""

    def __init__(self, config: ModelConfig, layer_id: int, shared_values: SharedValues | None = None):
        super().__init__()
        self.layer_id = layer_id
        self.norm1, self.norm2 = make_norm(config, config.d_model), make_norm(config, config.d_model)
        self.attn = MemoryFormerAttention(config) if config.model == "memoryformer" else DenseAttention(config)
        self.ffn_kind = ffn_kind(config, layer_id)
        d = config.d_model
        if self.ffn_kind == "memoryblock":
            self.ffn = MemoryBlock(d, tau=config.tau, expand_bits=config.expand_bits,
                                   temperature=config.mf_temperature, weighting=config.mf_weighting)
        elif self.ffn_kind == "moe":
            self.ffn = MoEFFN(d, config.expert_hidden, config.moe_experts, config.moe_topk, INIT_STD,
                              INIT_STD / (2 * config.n_layers) ** 0.5)
        elif self.ffn_kind == "pkm":
            self.ffn = ProductKeyMemory(d, n_keys=config.pkm_n_keys, heads=config.pkm_heads, topk=config.pkm_topk,
                                        k_dim=config.pkm_k_dim, v_dim=config.pkm_v_dim,
                                        query_norm=config.pkm_query_norm, values=shared_values)
        elif self.ffn_kind == "memoryplus":
            self.ffn = MemoryPlus(d, n_keys=config.pkm_n_keys, heads=config.pkm_heads, topk=config.pkm_topk,
                                  k_dim=config.pkm_k_dim, v_dim=config.pkm_v_dim, qk_norm=config.qk_norm,
                                  values=shared_values)
        else:
            self.ffn = FFN(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def ffn_kind(config: ModelConfig, layer_id: int) -> str:
    """What replaces the FFN in layer ``layer_id``: dense, moe, memoryblock, pkm or memoryplus."""
    if config.model == "memoryformer":
        return "memoryblock"
    if config.model == "moe":
        return "moe"
    if config.model in ("pkm", "memoryplus") and layer_id in config.memory_layer_ids():
        return config.model
    return "dense"


# ---------------------------------------------------------------------------------------------------------- model
class GPT(nn.Module):
    """The decoder. ``forward(ids, targets=None) → (logits, loss)``; ``report()`` gives sizes and FLOPs."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        d = config.d_model
        self.tok_emb = nn.Embedding(config.vocab_size, d)
        nn.init.normal_(self.tok_emb.weight, std=INIT_STD)
        self.shared_values = None
        if config.model in ("pkm", "memoryplus"):
            v_dim = config.pkm_v_dim or d
            self.shared_values = SharedValues(config.pkm_n_keys**2, v_dim)  # one pool, read by every memory layer
        self.blocks = nn.ModuleList(Block(config, i, self.shared_values) for i in range(config.n_layers))
        self.norm_f = make_norm(config, d)
        if config.tied_head:
            self.head = None
        else:
            self.head = nn.Linear(d, config.vocab_size, bias=False)
            nn.init.normal_(self.head.weight, std=INIT_STD)

    # ------------------------------------------------------------------ forward
    def head_weight(self) -> torch.Tensor:
        return self.tok_emb.weight if self.head is None else self.head.weight

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None):
        if ids.dim() != 2 or ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"ids must be a (batch, time) integer tensor, got {tuple(ids.shape)} {ids.dtype}")
        if ids.shape[1] > self.config.seq_len:
            raise ValueError(f"sequence of {ids.shape[1]} tokens exceeds seq_len={self.config.seq_len}")
        x = self.tok_emb(ids)
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.norm_f(x), self.head_weight())
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return logits, loss

    def aux_loss(self) -> torch.Tensor:
        """MoE load-balancing loss of the last forward (0 for other models), already scaled by moe_aux_coef."""
        losses = [b.ffn.aux_loss for b in self.blocks if isinstance(b.ffn, MoEFFN)]
        if not losses or self.config.moe_aux_coef == 0:
            return torch.zeros(())
        return self.config.moe_aux_coef * torch.stack(losses).sum()

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``max_new_tokens`` continuations of ``ids`` (B, T); temperature 0 means greedy."""
        for _ in range(max_new_tokens):
            logits, _ = self(ids[:, -self.config.seq_len:])
            logits = logits[:, -1, :].float()
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
            ids = torch.cat([ids, nxt], dim=1)
        return ids

    # ------------------------------------------------------------------ parameter groups
    def memory_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameters that get their own optimizer group: MemoryFormer ``tables`` and product-key ``values``."""
        tables = [m.tables for m in self.modules() if isinstance(m, HashMemory)]
        values = [self.shared_values.weight] if self.shared_values is not None else []
        return {"tables": tables, "values": values}

    # ------------------------------------------------------------------ accounting
    def param_counts(self) -> dict[str, int]:
        """Total parameters and parameters active per token (each shared tensor counted once).

        Inactive per token: the hash-table rows a token does not hash to (K of K·2^τ rows are read), the values it
        does not retrieve (heads · top-k rows per memory layer), the experts it is not routed to, and — with an untied
        head — all but one row of the input embedding. A tied embedding is fully active (the head reads it all).
        """
        cfg = self.config
        total = sum(p.numel() for p in self.parameters())
        inactive = 0
        for m in self.modules():
            if isinstance(m, HashMemory):
                inactive += m.tables.numel() - m.num_tables * m.out_features
            elif isinstance(m, MoEFFN):
                inactive += m.inactive_params()
        if self.shared_values is not None:
            read_rows = sum(cfg.pkm_heads * cfg.pkm_topk for b in self.blocks if b.ffn_kind in ("pkm", "memoryplus"))
            sv = self.shared_values
            inactive += (sv.n_values - min(read_rows, sv.n_values)) * sv.dim
        if self.head is not None:
            inactive += self.tok_emb.weight.numel() - cfg.d_model
        return {"total": total, "active": total - inactive}

    def memory_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of the lookup memories — hash tables and the shared value pool, each counted once (0 for dense)."""
        size = sum(m.memory_bytes(dtype) for m in self.modules() if isinstance(m, HashMemory))
        if self.shared_values is not None:
            size += self.shared_values.memory_bytes(dtype)
        return size

    def flops_per_token(self, context: int | None = None) -> dict[str, int]:
        """Forward multiply-adds per token (memlab.flops' convention: 1 FLOP = 1 multiply-add).

        Attention's token mixing is counted as the paper does, 2·s·d per token and layer (2·s²·d per sequence, no
        causal halving) with s = ``context`` (default seq_len). Norms, softmax and the embedding lookup are not counted.
        Returns ``{"attention_mixing", "projections", "ffn", "head", "total"}``.
        """
        cfg = self.config
        s = context or cfg.seq_len
        mixing = cfg.n_layers * flops_lib.attention_flops(s, cfg.d_model) // s
        proj = sum(b.attn.flops_per_token() for b in self.blocks)
        ffn = sum(b.ffn.flops_per_token() for b in self.blocks)
        head = flops_lib.linear_flops_per_token(cfg.d_model, cfg.vocab_size)
        return {"attention_mixing": mixing, "projections": proj, "ffn": ffn, "head": head,
                "total": mixing + proj + ffn + head}

    def report(self) -> dict:
        """One flat dict for tables: params total/active, memory MB (fp32, 10^6 B), parameter MB, FLOPs/token."""
        counts = self.param_counts()
        return {
            "model": self.config.model,
            "params_total": counts["total"],
            "params_active": counts["active"],
            "memory_mb": self.memory_bytes() / 1e6,
            "params_mb": counts["total"] * 4 / 1e6,
            "flops_per_token": self.flops_per_token()["total"],
        }


def build_model(config: ModelConfig | dict | None = None, **overrides) -> GPT:
    """``build_model("memoryformer", d_model=64)``-style convenience: a config, a dict, or a model name + overrides."""
    if isinstance(config, str):
        overrides = {"model": config, **overrides}
        config = None
    if config is None:
        config = ModelConfig.from_dict(overrides)
    elif isinstance(config, dict):
        config = ModelConfig.from_dict({**config, **overrides})
    elif overrides:
        config = ModelConfig.from_dict({**config.to_dict(), **overrides})
    return GPT(config)
