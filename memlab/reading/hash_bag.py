"""MemoryFormer's Memory Layer as one primitive: addressing and reading fused, shaped like ``embedding_bag``.

    hash_read(x, tables, tau=τ)  ==  embedding_bag(tables, rows, weights)   up to fp32 rounding, where
    rows[..., k] = k·2^τ + h(z_k),  weights[..., k] = p(z_k),  z_k = x[..., k·τ : (k+1)·τ]

(MemoryFormer, Ding et al. 2024, the Memory Layer: the hash h and the bucket weight p of ``memlab.hashing``.) Fusing
them lets a backend hash and gather in one pass, with no (N, K) index and weight tensors in between.

This module is the one place that picks a backend. Each backend takes tensors, never modules:

    "torch"   ``kernels.torch_hash``: the addressing equations as one autograd node, then ``F.embedding_bag``
    "c"       ``kernels.cpu``: one C call that hashes and gathers (fp32 CPU tensors, a C compiler at first use)
    "triton"  ``kernels.triton_hash``: one Triton kernel (CUDA, or the CPU under ``TRITON_INTERPRET=1``)
    "auto"    Triton on CUDA when triton is installed; on the CPU the C kernel where it applies, else torch.
              ``MEMLAB_BACKEND`` (torch|triton) overrides "auto", as for ``embedding_bag``.

Row-sparse table gradients (``sparse=True``): the C backend writes only the U distinct rows read, coalesced (a
counting sort by row; ``kernels.cpu.gather_backward``), the torch backend uses ``F.embedding_bag(sparse=True)`` (one
row per read, uncoalesced). The Triton backend keeps a dense table gradient (its backward kernels scatter into a
(K·2^τ, d_out) buffer): ``backend="triton"`` with ``sparse=True`` raises, and "auto" with ``sparse=True`` picks torch
on CUDA. Step a row-sparse table with ``memlab.RowSparseAdam`` (lazy AdamW: not dense AdamW's update, see there).

All three use the same derivative for x: the closed form of ∂p/∂z (``hashing.bucket_probability_grad``), with
d|z|/dz = +1 at z = 0 (the side the hash puts 0 on), where autograd through ``abs`` would give 0.
"""
from __future__ import annotations

import torch

from .._checks import check_float_input
from ..addressing.hashing import suggest_taus
from .bag import resolve_backend
from .kernels import cpu
from .kernels.torch_hash import hash_read_torch

BACKENDS = ("auto", "torch", "c", "triton")
WEIGHTINGS = ("paper", "l1")


def check_divisible_by_tau(features: int, tau: int, name: str) -> None:
    """Raise ``ValueError`` naming valid τ when ``features`` does not split into chunks of τ."""
    if features % tau:
        options = suggest_taus(features)
        hint = f"try tau in {{{', '.join(map(str, options))}}}" if options else f"pad {name} to a multiple of tau"
        raise ValueError(f"{name}={features} is not divisible by tau={tau}; {hint}")


def resolve_hash_backend(backend: str, x2d: torch.Tensor, tables: torch.Tensor, sparse: bool = False) -> str:
    """The backend ``hash_read`` runs: "auto" resolved, an explicit choice checked (one clear error if it cannot run)."""
    if sparse and backend == "triton":
        raise ValueError(
            "sparse=True (a row-sparse table gradient) is not implemented in the Triton backend, whose backward writes "
            "a dense table gradient; use backend='c' (CPU), 'torch' or 'auto', or keep the dense gradient with "
            "sparse=False (HashMemory(..., sparse_grad=False))"
        )
    if backend == "c":
        if not cpu.supports(x2d, tables):
            raise ValueError(
                f"backend='c' needs fp32 CPU tensors and contiguous tables, got x {x2d.dtype} on {x2d.device} and "
                f"tables {tables.dtype} on {tables.device}; use backend='auto' (it picks C only where it applies)"
            )
        if not cpu.available():
            raise RuntimeError("backend='c' needs memlab's C kernel, which could not be built here (see the warning "
                               "above); use backend='torch' or backend='auto'")
        return "c"
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    resolved = resolve_backend(backend, tables)  # "torch" | "triton"; validates "triton" and MEMLAB_BACKEND
    if backend == "auto" and cpu.supports(x2d, tables) and cpu.available() and (resolved == "torch" or sparse):
        return "c"
    if sparse and resolved == "triton":  # "auto" (or MEMLAB_BACKEND=triton) with a sparse gradient: torch does it
        return "torch"
    return resolved


def read_backend(backend: str, tables: torch.Tensor, sparse: bool = False) -> str:
    """The ``embedding_bag`` backend of ``HashMemory.read`` (a read with given addresses: MemoryFormer's attention
    hashes once and reads its Q, K and V tables with the same rows). With a row-sparse gradient on fp32 CPU tables
    ("auto" or "c"): "c", whose backward writes each row read once, sorted (``F.embedding_bag(sparse=True)`` gives one
    row per read, which the optimizer must then sort and sum). Otherwise torch/triton as for ``embedding_bag`` (a
    dense read keeps F.embedding_bag's summation order, which the values-parallel checks compare bit for bit)."""
    if sparse and backend in ("auto", "c") and cpu.supports_bag(tables, torch.empty(0, dtype=torch.int64), None) \
            and cpu.available():
        return "c"
    return "torch" if backend == "c" else backend


def hash_read(
    x: torch.Tensor,
    tables: torch.Tensor,
    *,
    tau: int,
    temperature: float = 1.0,
    weighting: str = "paper",
    bias: torch.Tensor | None = None,
    backend: str = "auto",
    backward: str | None = None,
    sparse: bool = False,
) -> torch.Tensor:
    """MemoryFormer's Memory Layer on tensors: y = Σ_k w(z_k) · tables[k·2^τ + h(z_k)] (+ bias).

    Equal to ``embedding_bag(tables, rows, weights)`` with ``(rows, weights) = HashMemory.address(x)`` up to fp32
    rounding (backends sum the K rows in different orders). Differentiable in x, tables and bias.

    Args:
        x: (..., d_in) floating input, d_in = K·τ.
        tables: (K·2^τ, d_out): the K tables stacked, table k in rows [k·2^τ, (k+1)·2^τ).
        tau: bits per chunk.
        temperature: t in p(z) = Π σ(2|z_i|/t).
        weighting: "paper" (default): w = p(z), MemoryFormer's equation. "l1": the released code's ‖z‖₁ · p(z).
        bias: (d_out,) or None.
        backend: "auto" | "torch" | "c" | "triton" (the module docstring says what each is).
        backward: Triton backend only: the EmbeddingBag backward strategy, "atomic" or "reverse".
        sparse: give ``tables`` a row-sparse gradient (a sparse COO tensor of the rows read) instead of a dense
            (K·2^τ, d_out) one; C and torch backends (see the module docstring).

    Returns:
        (..., d_out) in ``tables.dtype``.
    """
    if not isinstance(tables, torch.Tensor) or tables.dim() != 2:
        got = tuple(tables.shape) if isinstance(tables, torch.Tensor) else type(tables).__name__
        raise ValueError(f"tables must be a 2-D tensor (K·2^tau, d_out), got {got}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r} is not one of {WEIGHTINGS}")
    check_float_input(x, None, "hash_read")
    d_in = x.shape[-1]
    check_divisible_by_tau(d_in, tau, "x.shape[-1]")
    num_tables = d_in // tau
    if tables.shape[0] != num_tables << tau:
        raise ValueError(
            f"tables has {tables.shape[0]} rows but x.shape[-1]={d_in} with tau={tau} addresses K·2^tau = "
            f"{num_tables} · {2**tau} = {num_tables << tau}; build tables of shape ({num_tables << tau}, d_out)"
        )
    x2d = x if x.dim() == 2 else x.reshape(-1, d_in)
    args = (x2d, tables, bias, num_tables, tau, float(temperature), weighting == "l1")
    route = resolve_hash_backend(backend, x2d, tables, sparse)
    if route == "c":
        out = cpu.hash_read_c(*args, sparse=sparse)
    elif route == "triton":
        from .kernels.triton_hash import hash_read_triton  # imports triton: only on this route

        out = hash_read_triton(*args, backward=backward)
    else:
        out = hash_read_torch(*args, sparse=sparse)
    return out if x.dim() == 2 else out.reshape(*x.shape[:-1], tables.shape[1])
