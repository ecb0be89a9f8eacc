"""MemoryFormer's Memory Layer: a fully-connected layer replaced by K hash tables (papers.md §A).

    y = Σ_k p(z_k) · T_k[h(z_k)]          z_k = x[k·τ : (k+1)·τ],  k = 0 … K-1,  K = d_in / τ

Addressing (``address``) turns x into K row indices and K weights; reading (``read``) is one weighted EmbeddingBag
over a single (K·2^τ, d_out) parameter, with row k·2^τ + h(z_k) for table k.
"""
from __future__ import annotations


import torch
from torch import nn

from ._checks import DEFAULT_MAX_MEMORY_BYTES, check_float_input, check_memory, check_positive_int
from .embedding_bag import embedding_bag, resolve_backend
from .kernels.hash_torch import hash_memory_forward
from .hashing import bucket_probability, l1_bucket_weight, sign_codes, suggest_taus

WEIGHTINGS = ("paper", "l1")


def check_divisible_by_tau(features: int, tau: int, name: str) -> None:
    """Raise ``ValueError`` naming valid τ when ``features`` does not split into chunks of τ."""
    if features % tau:
        options = suggest_taus(features)
        hint = f"try tau in {{{', '.join(map(str, options))}}}" if options else f"pad {name} to a multiple of tau"
        raise ValueError(f"{name}={features} is not divisible by tau={tau}; {hint}")


class HashMemory(nn.Module):
    """MemoryFormer Memory Layer, shaped like ``nn.Linear(in_features, out_features)``.

    Args:
        in_features: d_in; must be divisible by ``tau``.
        out_features: d_out, the width of every table row.
        tau: bits per chunk; each of the K = d_in/τ tables has 2^τ rows.
        temperature: t in p(z) = Π σ(2|z_i|/t). The paper names t without a value; the code has t = 1.
        weighting: "paper" (default): rows weighted by p(z_k). "l1": the released code's ‖z_k‖₁ · p(z_k).
        bias: add a learned bias (the code does, initialised 0.001·randn; the paper's layer has none).
        init_std: tables start N(0, init_std²); 0.02 as in the released code.
        backend: passed to ``memlab.embedding_bag``.
        max_memory_bytes: refuse to build tables larger than this (fp32 estimate); None disables the check.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        tau: int = 8,
        temperature: float = 1.0,
        weighting: str = "paper",
        bias: bool = False,
        init_std: float = 0.02,
        backend: str = "auto",
        max_memory_bytes: float | None = DEFAULT_MAX_MEMORY_BYTES,
    ):
        super().__init__()
        check_positive_int(in_features, "in_features")
        check_positive_int(out_features, "out_features")
        check_positive_int(tau, "tau")
        check_divisible_by_tau(in_features, tau, "in_features")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting={weighting!r} is not one of {WEIGHTINGS}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.in_features, self.out_features, self.tau = in_features, out_features, tau
        self.num_tables = in_features // tau
        self.temperature, self.weighting, self.backend = float(temperature), weighting, backend
        rows = self.num_tables * 2**tau
        check_memory(
            rows * out_features * 4, f"HashMemory tables ({self.num_tables} × 2^{tau} rows × {out_features}, fp32)",
            max_memory_bytes, "lower tau or out_features",
        )
        self.tables = nn.Parameter(torch.randn(rows, out_features) * init_std)
        self.bias = nn.Parameter(torch.randn(out_features) * 0.001) if bias else None
        self.register_buffer(
            "table_offsets", torch.arange(self.num_tables, dtype=torch.long) * 2**tau, persistent=False
        )

    @property
    def K(self) -> int:
        """Number of hash tables (chunks), the paper's K."""
        return self.num_tables

    def chunks(self, x: torch.Tensor) -> torch.Tensor:
        """Split x (..., d_in) into K chunks z_k: (..., K, τ). No projection before hashing (paper)."""
        check_float_input(x, self.in_features, type(self).__name__)
        return x.unflatten(-1, (self.num_tables, self.tau))

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Bucket id h(z_k) ∈ [0, 2^τ) of every chunk: LongTensor (..., K). Bit i is set when z_i ≥ 0 (LSB = z_0)."""
        return sign_codes(self.chunks(x))

    def bucket_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The weight of every hashed row, (..., K): p(z_k) (paper) or ‖z_k‖₁ · p(z_k) (weighting="l1")."""
        return self._chunk_weights(self.chunks(x))

    def _chunk_weights(self, z: torch.Tensor) -> torch.Tensor:
        if self.weighting == "l1":
            return l1_bucket_weight(z, self.temperature)
        return bucket_probability(z, self.temperature)

    def address(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Addressing step: (row indices into ``tables`` (..., K), weights (..., K)).

        Depends only on x, τ, t and the weighting, so layers with equal settings can share one call (MemoryFormer's
        Q, K and V projections hash once).
        """
        z = self.chunks(x)
        return sign_codes(z) + self.table_offsets, self._chunk_weights(z)

    def read(self, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Reading step: Σ_k weights_k · tables[indices_k] (+ bias), one weighted EmbeddingBag."""
        y = embedding_bag(self.tables, indices, weights.to(self.tables.dtype), backend=self.backend, check=False)
        return y if self.bias is None else y + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = read(address(x)), fused: on the torch backend one C call (inference, when a C compiler is present) or
        a fused addressing node with a closed-form backward (``memlab.kernels.hash_torch``); on the triton backend
        one Triton kernel that hashes and gathers (``memlab.kernels.hash_triton``). Same numbers as
        ``self.read(*self.address(x))`` up to fp32 rounding."""
        check_float_input(x, self.in_features, "HashMemory")
        if self.backend == "torch" or resolve_backend(self.backend, self._parameters["tables"]) == "torch":
            return hash_memory_forward(self, x)
        from .kernels.hash_triton import hash_memory_triton  # imports triton: only on the triton backend

        return hash_memory_triton(self, x)

    def memory_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of the hash tables stored in ``dtype`` (the bias is not counted, as in the paper's tables)."""
        return self.tables.numel() * torch.empty((), dtype=dtype).element_size()

    def flops_per_token(self) -> int:
        """Multiply-adds per token, counted: K weighted rows of d_out summed, plus ~1 op per input element for p(z)."""
        return self.num_tables * self.out_features + self.in_features

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, tau={self.tau}, K={self.num_tables}, "
            f"temperature={self.temperature}, weighting={self.weighting!r}, bias={self.bias is not None}"
        )
