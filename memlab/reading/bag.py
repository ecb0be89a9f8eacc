"""The one reading primitive: a weighted EmbeddingBag.

Both memory layers end in the same step (notebooks/paper_notes.md): given row ``indices`` and ``weights`` of shape (..., B), read
``B`` rows of a table and sum them, each scaled by its weight::

    out[n, :] = sum_j  weights[n, j] * table[indices[n, j], :]

MemoryFormer's bag holds the K hashed rows (one per table) weighted by p(z_k); a product-key memory's bag holds the
heads × top-k selected values weighted by their softmax scores.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from .._checks import check_index_range
from . import kernels

BACKENDS = ("auto", "torch", "triton")
#: ``embedding_bag`` also takes "c" (``kernels.cpu.embedding_bag_c``) when asked by name; "auto" never picks it.
BAG_BACKENDS = BACKENDS + ("c",)


def resolve_backend(backend: str, table: torch.Tensor) -> str:
    """Map ``"auto"`` to a concrete backend: Triton on CUDA tensors when triton is installed, else torch.

    The environment variable ``MEMLAB_BACKEND`` (torch|triton) overrides ``"auto"``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    if backend == "auto":
        backend = os.environ.get("MEMLAB_BACKEND", "auto")
        if backend not in BACKENDS:
            raise ValueError(f"MEMLAB_BACKEND={backend!r} is not one of {BACKENDS}")
    if backend == "auto":
        return "triton" if (table.is_cuda and kernels.triton_available()) else "torch"
    if backend == "triton":
        kernels.require_triton(table)
    return backend


def check_bag_arguments(table, indices, weights) -> None:
    """Validate the (table, indices, weights) triple; raises one TypeError/ValueError naming the fix.

    ``check_bag_shapes`` (types, shapes, devices: no device sync) followed by the index range (one device sync on CUDA).
    """
    check_bag_shapes(table, indices, weights)
    check_index_range(indices, table.shape[0])


def check_bag_shapes(table, indices, weights) -> None:
    """Validate types, dtypes, shapes and devices of (table, indices, weights) without reading any values.

    Cheap enough for every call (no device sync): ``embedding_bag`` runs it whatever ``check`` says.
    """
    if not isinstance(table, torch.Tensor) or table.dim() != 2:
        shape = tuple(table.shape) if isinstance(table, torch.Tensor) else type(table).__name__
        raise ValueError(f"table must be a 2-D tensor (rows, dim), got {shape}")
    if not table.is_floating_point():
        raise TypeError(f"table must be floating point, got dtype={table.dtype}")
    if not isinstance(indices, torch.Tensor) or indices.dtype not in (torch.int32, torch.int64):
        got = indices.dtype if isinstance(indices, torch.Tensor) else type(indices).__name__
        raise TypeError(f"indices must be an int32 or int64 tensor, got {got}; use indices.long()")
    if indices.dim() == 0:
        raise ValueError("indices must have shape (..., bag_size), got a scalar; use indices.view(1, 1)")
    if weights is not None:
        if not isinstance(weights, torch.Tensor) or not weights.is_floating_point():
            got = weights.dtype if isinstance(weights, torch.Tensor) else type(weights).__name__
            raise TypeError(f"weights must be a floating-point tensor, got {got}")
        if weights.shape != indices.shape:
            raise ValueError(
                f"weights must have the shape of indices, got weights {tuple(weights.shape)} "
                f"and indices {tuple(indices.shape)}"
            )
        if weights.device != table.device:
            raise ValueError(f"weights are on {weights.device} but table is on {table.device}; move them together")
    if indices.device != table.device:
        raise ValueError(f"indices are on {indices.device} but table is on {table.device}; move them together")


def embedding_bag_torch(
    table: torch.Tensor, indices2d: torch.Tensor, weights2d: torch.Tensor, sparse: bool = False
) -> torch.Tensor:
    """Reference backend: ``F.embedding_bag(mode="sum")`` on (bags, B) indices with per-sample weights.

    ``sparse=True``: the table's gradient is a sparse COO tensor with one row per read (``F.embedding_bag(sparse=True)``;
    uncoalesced — a row read twice appears twice) instead of a dense (rows, dim) tensor.
    """
    if indices2d.shape[1] == 0:  # empty bags sum to zero; F.embedding_bag rejects an (n, 0) input
        if sparse:  # 1-D indices + offsets: n empty bags, and an empty sparse table gradient (a slice's is dense)
            offsets = indices2d.new_zeros(indices2d.shape[0])
            return F.embedding_bag(indices2d.reshape(-1), table, offsets, mode="sum",
                                   per_sample_weights=weights2d.reshape(-1).to(table.dtype), sparse=True)
        return weights2d.to(table.dtype) @ table[:0]  # (n, 0) @ (0, dim): zeros that stay in the autograd graph
    return F.embedding_bag(
        indices2d, table, mode="sum", per_sample_weights=weights2d.to(table.dtype), sparse=sparse
    )


def embedding_bag(
    table: torch.Tensor,
    indices: torch.Tensor,
    weights: torch.Tensor | None = None,
    backend: str = "auto",
    *,
    check: bool = True,
    backward: str | None = None,
    sparse: bool = False,
) -> torch.Tensor:
    """Weighted row-gather-and-sum: ``out[..., :] = Σ_j weights[..., j] · table[indices[..., j], :]``.

    Args:
        table: (rows, dim) floating tensor (fp32/fp16/bf16/fp64). Differentiable.
        indices: (..., B) int32/int64 row ids in [0, rows). Duplicates within and across bags are allowed.
        weights: (..., B) floating per-sample weights, or None for all ones. Differentiable.
        backend: "torch" (``F.embedding_bag``), "triton" (memlab's kernels, CUDA or ``TRITON_INTERPRET=1``), or
            "auto" (Triton on CUDA when triton is installed, torch otherwise; ``MEMLAB_BACKEND`` overrides).
            "c": memlab's C kernel (fp32 CPU table, int64 indices; its backward writes each touched row once, and a
            coalesced gradient with ``sparse=True``); only when named — ``HashMemory.read`` names it, "auto" does not.
        check: check the index range up front (one device sync on CUDA) and report it with memlab's ValueError.
            Types, dtypes, shapes and devices are checked on every call (no sync). ``check=False`` skips the range
            check for callers that built the indices themselves (the layers' ``forward`` and ``read``) but never lets
            an out-of-range index crash the process: the torch backend raises torch's own RuntimeError (a device-side
            assert on CUDA), and the Triton backend, whose kernels have no bounds checks, checks the range before
            every launch — host-side on CPU tensors (the interpreter: the same ValueError), as an asynchronous
            device-side assert on CUDA (no sync; the failure torch's own CUDA kernels give).
        backward: Triton backend only — the backward strategy, "atomic" (scatter-add) or "reverse" (atomic-free,
            deterministic: reverse index map, each touched row sums its own contributors). None: the environment
            variable ``MEMLAB_BAG_BACKWARD``, else ``memlab.reading.kernels.triton_bag.DEFAULT_BACKWARD`` (see its comment
            for why, and for the fact that no GPU measurement has chosen it yet). Ignored by the torch backend.
        sparse: give ``table`` a row-sparse gradient (a sparse COO tensor holding only the rows read) instead of a
            dense one; step it with ``memlab.RowSparseAdam`` (``memlab.lab.row_sparse``). Torch backend only: "auto" then
            means torch (``MEMLAB_BACKEND`` is not consulted) and "triton" raises, since memlab's kernels write a dense
            table gradient.

    Returns:
        (..., dim) tensor in ``table.dtype``.
    """
    if sparse and backend == "triton":  # an argument conflict: report it before anything about devices or triton
        raise ValueError(
            "sparse=True (a row-sparse table gradient) needs the torch backend: memlab's Triton kernels write a dense "
            "table gradient; pass backend='torch' (or 'auto'), or keep the dense gradient with sparse=False "
            "(SharedValues(..., sparse_grad=False))"
        )
    check_bag_shapes(table, indices, weights)
    if check:
        check_index_range(indices, table.shape[0])
    if weights is None:
        weights = torch.ones(indices.shape, dtype=table.dtype, device=table.device)
    lead = indices.shape[:-1]
    bag = indices.shape[-1]
    n_bags = math.prod(lead)
    indices2d = indices.reshape(n_bags, bag)
    weights2d = weights.reshape(n_bags, bag)
    if backend == "c":
        from .kernels import cpu

        if not (cpu.supports_bag(table, indices2d, weights2d) and cpu.available()):
            raise ValueError(f"backend='c' needs an fp32 CPU table, int64 indices and fp32 weights and a built C "
                             f"kernel, got table {table.dtype} on {table.device}, indices {indices.dtype}; use "
                             "backend='auto'")
        return cpu.embedding_bag_c(table, indices2d, weights2d, sparse=sparse).reshape(*lead, table.shape[1])
    resolved = "torch" if sparse and backend == "auto" else resolve_backend(backend, table)
    if resolved == "triton":
        out = kernels.embedding_bag_triton(table, indices2d, weights2d, backward=backward)
    else:
        out = embedding_bag_torch(table, indices2d, weights2d, sparse=sparse)
    return out.reshape(*lead, table.shape[1])
