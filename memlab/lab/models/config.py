"""One config for every tiny language model memlab trains: a GPT-style decoder whose blocks are swapped per variant.

``model`` names an entry of the registry in ``variants.py`` (dense, moe, memoryformer, pkm, memoryplus, peer, ...).
Every field is checked in ``validate``: unknown keys and impossible sizes raise one ``ValueError`` that names the fix;
the checks that belong to one variant live in its registry entry.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..._checks import check_known_keys, check_positive_int

from .variants import MODEL_TYPES, VARIANTS

NORMS = ("layer", "rms")


@dataclass
class ModelConfig:
    """Architecture of a tiny decoder. Defaults are a ~1M-parameter dense model that trains on 2 CPU cores."""

    model: str = "dense"
    vocab_size: int = 256            # byte-level
    seq_len: int = 128               # context length (RoPE needs no learned positions; this bounds generation)
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ffn_mult: int = 4                # dense FFN hidden = ffn_mult · d_model
    rope_fraction: float = 0.25      # share of each head's dims that get rotary embeddings (Pythia / MemoryFormer code)
    rope_base: float = 10000.0
    norm: str = "layer"              # "layer" (Pythia) or "rms" (MemoryFormer's code)
    tied_head: bool = True           # LM head shares the token-embedding matrix
    # MemoryFormer
    tau: int = 8                     # bits per chunk: K = d_model / tau tables of 2^tau rows
    expand_bits: int = 2             # e: Memory Block's second layer hashes tau + e bits
    mf_temperature: float = 1.0
    mf_weighting: str = "paper"      # "paper": p(z); "l1": released code's ||z||_1 p(z)
    mf_hash_input: str = "identity"  # what is hashed: x (paper), "rotate" R x, "center" x − running mean (memlab's)
    mf_activation: str | None = None  # between the Memory Block's two layers: None (paper) or "gelu" (Table 6)
    # product-key memory (pkm / memoryplus / peer: n² values or experts, heads, top-k)
    memory_layers: tuple | None = None  # layers whose FFN becomes a memory; None → centred with stride (paper)
    n_memory_layers: int | None = None  # used when memory_layers is None; None → clamp(n_layers // 8, 1, 3)
    pkm_n_keys: int = 32             # n half-keys; n² values in the shared pool
    pkm_heads: int = 4
    pkm_topk: int = 8
    pkm_k_dim: int | None = None     # None → d_model / 2
    pkm_v_dim: int | None = None     # None → d_model (peer: must stay d_model)
    pkm_query_norm: str | None = None  # plain PKM: None (released code), "batch", "layer", "qk"
    qk_norm: bool = True             # Memory+ uses qk-norm (paper)
    # mixture of experts
    moe_experts: int = 8
    moe_topk: int = 2                # each expert's hidden = ffn_mult·d_model / moe_topk → active FFN = dense FFN
    moe_aux_coef: float = 0.01       # Switch-style load-balancing loss weight (0 disables it)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        """Build from a dict, rejecting unknown keys with a suggestion (``d_modl`` → did you mean ``d_model``?)."""
        check_known_keys([f.name for f in fields(cls)], values, "model")
        values = dict(values)
        if isinstance(values.get("memory_layers"), list):
            values["memory_layers"] = tuple(values["memory_layers"])
        config = cls(**values)
        config.validate()
        return config

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["memory_layers"] is not None:
            d["memory_layers"] = list(d["memory_layers"])
        return d

    # ------------------------------------------------------------------ derived sizes
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_hidden(self) -> int:
        return self.ffn_mult * self.d_model

    @property
    def expert_hidden(self) -> int:
        return self.ffn_hidden // self.moe_topk

    @property
    def rope_dims(self) -> int:
        """Rotary dims per head: rope_fraction · head_dim rounded down to an even number."""
        return 2 * int(self.rope_fraction * self.head_dim // 2)

    def memory_layer_ids(self) -> tuple[int, ...]:
        """Layers whose FFN is a product-key memory: ``memory_layers`` or m layers centred with stride n_layers/m.

        The paper's best 24-layer setting is layers 4, 12, 20 (m = 3): layer_i = (2i + 1) · L // (2m).
        """
        if self.memory_layers is not None:
            return tuple(sorted(int(i) for i in self.memory_layers))
        m = self.n_memory_layers if self.n_memory_layers is not None else min(3, max(1, self.n_layers // 8))
        return tuple((2 * i + 1) * self.n_layers // (2 * m) for i in range(m))

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        if self.model not in VARIANTS:
            raise ValueError(f"model={self.model!r} is not one of {MODEL_TYPES}")
        for name in ("vocab_size", "seq_len", "d_model", "n_layers", "n_heads", "ffn_mult", "tau",
                     "pkm_n_keys", "pkm_heads", "pkm_topk", "moe_experts", "moe_topk"):
            check_positive_int(getattr(self, name), name)
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r} is not one of {NORMS}")
        if self.d_model % self.n_heads:
            divisors = [h for h in range(1, min(self.d_model, 64) + 1) if self.d_model % h == 0]
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; choose n_heads in {divisors}"
            )
        if not 0.0 <= self.rope_fraction <= 1.0:
            raise ValueError(f"rope_fraction must lie in [0, 1], got {self.rope_fraction}")
        variant = VARIANTS[self.model]
        variant.check(self)
        if variant.memory_layers_only:
            if self.n_memory_layers is not None and not 1 <= self.n_memory_layers <= self.n_layers:
                raise ValueError(f"n_memory_layers={self.n_memory_layers} must lie in [1, n_layers={self.n_layers}]")
            ids = self.memory_layer_ids()
            bad = [i for i in ids if not 0 <= i < self.n_layers]
            if bad or len(set(ids)) != len(ids) or not ids:
                raise ValueError(
                    f"memory_layers={list(ids)} must be distinct layer ids in [0, {self.n_layers}) (at least one)"
                )
