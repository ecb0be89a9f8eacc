"""One config for every tiny language model memlab trains: a GPT-style decoder whose blocks are swapped per variant.

    dense         attention (W_Q, W_K, W_V, W_O) + FFN                          the Pythia-like baseline
    moe           attention + top-k mixture-of-experts FFN, same active parameters as the dense FFN
    memoryformer  Q/K/V from three HashMemory tables sharing one hash, no W_O; MemoryBlock instead of the FFN
    pkm           ProductKeyMemory instead of the FFN in ``memory_layers`` (one SharedValues pool across them)
    memoryplus    MemoryPlus instead of the FFN in ``memory_layers`` (one SharedValues pool across them)

Every field is checked in ``validate``: unknown keys and impossible sizes raise one ``ValueError`` that names the fix.
"""
from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields

MODEL_TYPES = ("dense", "moe", "memoryformer", "pkm", "memoryplus")
NORMS = ("layer", "rms")


def check_known_keys(config_class, values: dict, what: str) -> None:
    """Reject keys that are not fields of ``config_class``, suggesting the closest name (``d_modl`` → ``d_model``)."""
    names = [f.name for f in fields(config_class)]
    unknown = [k for k in values if k not in names]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, names, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"unknown {what} config key(s): {', '.join(hints)}; valid keys: {', '.join(names)}")


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
    # product-key memory (pkm / memoryplus)
    memory_layers: tuple | None = None  # layers whose FFN becomes a memory; None → centred with stride (paper)
    n_memory_layers: int | None = None  # used when memory_layers is None; None → clamp(n_layers // 8, 1, 3)
    pkm_n_keys: int = 32             # n half-keys; n² values in the shared pool
    pkm_heads: int = 4
    pkm_topk: int = 8
    pkm_k_dim: int | None = None     # None → d_model / 2
    pkm_v_dim: int | None = None     # None → d_model
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
        check_known_keys(cls, values, "model")
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
        def positive(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")

        if self.model not in MODEL_TYPES:
            raise ValueError(f"model={self.model!r} is not one of {MODEL_TYPES}")
        for name in ("vocab_size", "seq_len", "d_model", "n_layers", "n_heads", "ffn_mult", "tau",
                     "pkm_n_keys", "pkm_heads", "pkm_topk", "moe_experts", "moe_topk"):
            positive(name)
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r} is not one of {NORMS}")
        if self.d_model % self.n_heads:
            divisors = [h for h in range(1, min(self.d_model, 64) + 1) if self.d_model % h == 0]
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; choose n_heads in {divisors}"
            )
        if not 0.0 <= self.rope_fraction <= 1.0:
            raise ValueError(f"rope_fraction must lie in [0, 1], got {self.rope_fraction}")
        if self.model == "memoryformer" and self.d_model % self.tau:
            taus = [t for t in range(3, 17) if self.d_model % t == 0]
            raise ValueError(
                f"d_model={self.d_model} is not divisible by tau={self.tau}; MemoryFormer splits each token into "
                f"d_model/tau chunks — choose tau in {taus} or a d_model that is a multiple of {self.tau}"
            )
        if self.model == "memoryformer" and self.tau + self.expand_bits > 20:
            raise ValueError(f"tau + expand_bits = {self.tau + self.expand_bits} gives tables of 2^{self.tau + self.expand_bits} rows; keep it ≤ 20")
        if self.model == "moe":
            if self.moe_topk > self.moe_experts:
                raise ValueError(f"moe_topk={self.moe_topk} exceeds moe_experts={self.moe_experts}")
            if self.ffn_hidden % self.moe_topk:
                raise ValueError(
                    f"ffn_mult·d_model={self.ffn_hidden} is not divisible by moe_topk={self.moe_topk}: "
                    "each expert gets ffn_hidden/moe_topk units so that the active FFN equals the dense one"
                )
        if self.model in ("pkm", "memoryplus"):
            if self.pkm_topk > self.pkm_n_keys:
                raise ValueError(f"pkm_topk={self.pkm_topk} exceeds pkm_n_keys={self.pkm_n_keys}")
            if self.n_memory_layers is not None and not 1 <= self.n_memory_layers <= self.n_layers:
                raise ValueError(f"n_memory_layers={self.n_memory_layers} must lie in [1, n_layers={self.n_layers}]")
            ids = self.memory_layer_ids()
            bad = [i for i in ids if not 0 <= i < self.n_layers]
            if bad or len(set(ids)) != len(ids) or not ids:
                raise ValueError(
                    f"memory_layers={list(ids)} must be distinct layer ids in [0, {self.n_layers}) (at least one)"
                )
