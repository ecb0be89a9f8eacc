"""A readable GPT-style decoder whose blocks are filled by the variant ``ModelConfig.model`` names (``variants.py``).

    x = tok_emb(ids)
    for each block:   x = x + Attn(Norm(x));   x = x + FFN(Norm(x))        (pre-norm; FFN may be a memory)
    logits = head(Norm(x))                                                (head tied to tok_emb by default)

The parts a block is built from (norms, RoPE, dense and MemoryFormer attention, the dense FFN) are in ``blocks.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import flops as flops_lib
from ...layers.hash_memory import HashMemory
from ...layers.product_key_memory import ProductKeyMemory
from ...layers.shared_values import SharedValues
from ...layers.sharded_values import ShardedValues
from .blocks import (  # noqa: F401  (re-exported: notebooks and tests import them from here)
    FFN, INIT_STD, CausalAttention, DenseAttention, MemoryFormerAttention, apply_rope, make_norm, rope_tables,
)
from .config import ModelConfig
from .moe import MoEFFN
from .variants import VARIANTS, ffn_kind  # noqa: F401


class Block(nn.Module):
    """Pre-norm block: x + Attn(Norm(x)), then + FFN(Norm(x)); the variant's registry entry builds Attn and FFN.

    ``ffn_kind`` says what sits in the FFN's place: the variant's ``ffn_kind`` (e.g. "memoryblock", "pkm", "peer")
    or "dense" in a layer the variant leaves alone.
    """

    def __init__(self, config: ModelConfig, layer_id: int, shared_values: SharedValues | None = None):
        super().__init__()
        variant = VARIANTS[config.model]
        self.layer_id = layer_id
        self.norm1, self.norm2 = make_norm(config, config.d_model), make_norm(config, config.d_model)
        self.attn = variant.attention(config)
        replaced = variant.replaces_ffn(config, layer_id)
        self.ffn_kind = variant.ffn_kind if replaced else "dense"
        self.ffn = variant.ffn(config, shared_values) if replaced else FFN(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


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
        if VARIANTS[config.model].shared_values:
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
        """Parameters that get their own optimizer group: MemoryFormer ``tables``, and ``values``: the weight of every
        ``SharedValues`` (the product-key value pool; PEER's up- and down-rows), each once."""
        tables = [m.tables for m in self.modules() if isinstance(m, HashMemory)]
        values = [m.weight for m in self.modules() if isinstance(m, SharedValues)]
        return {"tables": tables, "values": values}

    # ------------------------------------------------------------------ accounting
    def param_counts(self) -> dict[str, int]:
        """Total parameters and parameters active per token (each shared tensor counted once).

        Inactive per token: the hash-table rows a token does not hash to (K of K·2^τ rows are read), the shared
        values it does not retrieve (heads · top-k rows per memory layer), and what a layer's ``inactive_params()``
        reports (the experts a token is not routed to: MoE, PEER) — and, with an untied head, all but one row of the
        input embedding. A tied embedding is fully active (the head reads it all).
        """
        cfg = self.config
        total = sum(p.numel() for p in self.parameters())
        total += sum(m.numel_on_other_ranks() for m in self.modules() if isinstance(m, ShardedValues))  # whole tables
        inactive = 0
        for m in self.modules():
            if isinstance(m, HashMemory):
                inactive += m.tables.numel() - m.num_tables * m.out_features
            elif hasattr(m, "inactive_params"):
                inactive += m.inactive_params()
        if self.shared_values is not None:
            read_rows = sum(m.heads * m.topk for m in self.modules()
                            if isinstance(m, ProductKeyMemory) and m.values is self.shared_values)
            sv = self.shared_values
            inactive += (sv.n_values - min(read_rows, sv.n_values)) * sv.dim
        if self.head is not None:
            inactive += self.tok_emb.weight.numel() - cfg.d_model
        return {"total": total, "active": total - inactive}

    def memory_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of the lookup memories — hash tables and value tables (the shared pool, PEER's expert rows), each
        counted once (0 for dense and moe)."""
        return sum(m.memory_bytes(dtype) for m in self.modules() if isinstance(m, (HashMemory, SharedValues)))

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
