"""MemoryFormer's Memory Layer: a fully-connected layer replaced by K hash tables (Ding et al. 2024, Figure 3).

    y = Σ_k p(z_k) · T_k[h(z_k)]          z_k = x[k·τ : (k+1)·τ],  k = 0 … K-1,  K = d_in / τ

Addressing (``address``) turns x into K row indices and K weights; reading (``read``) is one weighted EmbeddingBag
over a single (K·2^τ, d_out) parameter, with row k·2^τ + h(z_k) for table k.
"""
from __future__ import annotations


import torch
from torch import nn

from .._checks import DEFAULT_MAX_MEMORY_BYTES, check_float_input, check_memory, check_positive_int
from ..addressing.hashing import bucket_probability, l1_bucket_weight, sign_codes
from ..reading.bag import embedding_bag
from ..reading.hash_bag import BACKENDS, WEIGHTINGS, check_divisible_by_tau, hash_read, read_backend
from ..reading.hash_bag import resolve_hash_backend
from ..reading.kernels import cpu
from .hash_input import HASH_INPUTS, HashInput


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
        backend: "auto" | "torch" | "c" | "triton", passed to ``memlab.hash_read`` (forward) and to
            ``memlab.embedding_bag`` (``read``; with ``sparse_grad`` on fp32 CPU tables "auto" and "c" read with the
            C bag, whose row-sparse gradient comes coalesced).
        max_memory_bytes: refuse to build tables larger than this (fp32 estimate); None disables the check.
        hash_input: what is cut into chunks and hashed: "identity" (default, the paper: x itself), "rotate" (a fixed
            random rotation R x) or "center" (x minus a running mean). memlab's own experiment, not the paper's:
            see ``memlab.layers.hash_input`` and notebook 08.
        sparse_grad: give ``tables`` a row-sparse gradient (a sparse COO tensor of the rows read, ``hash_read(...,
            sparse=True)``) instead of a dense one: a step at N tokens writes ≤ N·K rows, not all K·2^τ. Step it with
            ``memlab.RowSparseAdam`` (lazy AdamW, not AdamW's update; ``memlab.lab.row_sparse``); torch's Adam/AdamW
            reject sparse gradients. C and torch backends (the Triton backend's gradient is dense). A plain
            attribute: it can be switched on an existing layer.
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
        hash_input: str = "identity",
        sparse_grad: bool = False,
    ):
        super().__init__()
        check_positive_int(in_features, "in_features")
        check_positive_int(out_features, "out_features")
        check_positive_int(tau, "tau")
        check_divisible_by_tau(in_features, tau, "in_features")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting={weighting!r} is not one of {WEIGHTINGS}")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if hash_input not in HASH_INPUTS:
            raise ValueError(f"hash_input={hash_input!r} is not one of {HASH_INPUTS}")
        if not isinstance(sparse_grad, bool):
            raise TypeError(f"sparse_grad must be True or False, got {sparse_grad!r}")
        self.sparse_grad = sparse_grad
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
        self.hash_input = hash_input  # "identity" builds nothing: the paper's layer, bit for bit
        self.input_map = HashInput(in_features, hash_input) if hash_input != "identity" else None

    @property
    def K(self) -> int:
        """Number of hash tables (chunks), the paper's K."""
        return self.num_tables

    def chunks(self, x: torch.Tensor) -> torch.Tensor:
        """Split x (..., d_in) into K chunks z_k: (..., K, τ). No projection before hashing (paper)."""
        check_float_input(x, self.in_features, type(self).__name__)
        if self.input_map is not None:
            x = self.input_map(x)
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
        Q, K and V projections hash once). fp32 CPU input with backend "auto" or "c": one C call with a closed-form
        backward (``kernels.cpu.hash_address_c``); otherwise the equations of ``memlab.hashing`` (``sign_codes``,
        ``bucket_probability``) as torch ops, differentiated by autograd. Same numbers up to fp32 rounding. The C
        path's gradient for x is the closed form every ``hash_read`` backend uses, which differs from autograd
        through ``abs`` only at z = 0 (``hash_read``'s module docstring).
        """
        z = self.chunks(x)
        if self.input_map is not None and self.training:
            self.input_map.update_(x)
        x2d = z.reshape(-1, self.num_tables * self.tau)
        if resolve_hash_backend(self.backend, x2d, self.tables) == "c":
            rows, weights = cpu.hash_address_c(x2d, self.num_tables, self.tau, self.temperature,
                                               self.weighting == "l1")
            return rows.view(z.shape[:-1]), weights.view(z.shape[:-1])
        return sign_codes(z) + self.table_offsets, self._chunk_weights(z)

    def read(self, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Reading step: Σ_k weights_k · tables[indices_k] (+ bias), one weighted EmbeddingBag.

        ``indices`` and ``weights`` have one shape, (..., K) as ``address`` returns them. Types, shapes and devices are
        checked on every call without a device sync (weights of another shape are refused even when the element
        count matches, e.g. transposed). The index range is not checked up front, which would cost a device sync:
        ``address`` builds indices in range. An index outside [0, K·2^τ) from elsewhere still fails loudly, never
        crashing the process: torch's RuntimeError on the torch backend, memlab's ValueError on the Triton backend on
        CPU, a device-side assert on CUDA (see ``memlab.embedding_bag``'s ``check``).
        """
        backend = read_backend(self.backend, self.tables, self.sparse_grad)  # C for row-sparse gradients on the CPU
        y = embedding_bag(self.tables, indices, weights.to(self.tables.dtype), backend=backend, check=False,
                          sparse=self.sparse_grad)
        return y if self.bias is None else y + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = read(address(x)), fused: one call to ``memlab.hash_read``, which picks the torch, C or Triton backend.
        Same numbers as ``self.read(*self.address(x))`` up to fp32 rounding."""
        check_float_input(x, self.in_features, "HashMemory")
        params = self._parameters  # plain dict look-ups: nn.Module.__getattr__ costs ~1 µs each at 1 token
        if self.input_map is not None:
            mapped = self.input_map(x)
            if self.training:
                self.input_map.update_(x)
            x = mapped
        return hash_read(x, params["tables"], tau=self.tau, temperature=self.temperature, weighting=self.weighting,
                         bias=params.get("bias"), backend=self.backend, sparse=self.sparse_grad)

    def memory_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of the hash tables stored in ``dtype`` (the bias is not counted, as in the paper's tables)."""
        return self.tables.numel() * torch.empty((), dtype=dtype).element_size()

    def flops_per_token(self) -> int:
        """Multiply-adds per token, counted: K weighted rows of d_out summed, plus ~1 op per input element for p(z)."""
        extra = 0 if self.input_map is None else self.input_map.flops_per_token()
        return self.num_tables * self.out_features + self.in_features + extra

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, tau={self.tau}, K={self.num_tables}, "
            f"temperature={self.temperature}, weighting={self.weighting!r}, bias={self.bias is not None}"
            + (f", hash_input={self.hash_input!r}" if self.input_map is not None else "")
        )
