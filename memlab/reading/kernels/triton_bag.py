"""Triton kernels for the weighted EmbeddingBag: forward gather-sum and its backward.

Layout: ``indices`` and ``weights`` are contiguous (bags, B); ``table`` is contiguous (rows, dim).

forward   out[n, :]         = Σ_j w[n, j] · table[idx[n, j], :]
backward  grad_table[r, :]  = Σ_{(n, j): idx[n, j] = r} w[n, j] · grad_out[n, :]
              "atomic": one program per bag scatter-adds into the rows it read (tl.atomic_add into an fp32 buffer);
              "reverse": host-side reverse map (bincount, cumsum, stable argsort), then one program per touched row
              sums its own contributors in a fixed order — no atomics, deterministic — and computes grad_w there too
          grad_w[n, j]      = ⟨grad_out[n, :], table[idx[n, j], :]⟩

Each program owns one bag and loads a [BLOCK_B × BLOCK_D] tile of rows at once, so many rows are in flight;
accumulation is in fp32 (fp64 for fp64 tables, so gradcheck can run on the kernels). Row offsets are int64.

The kernels load ``table[idx]`` without bounds checks, so every host launcher checks the index range first
(``check_rows``): an out-of-range index would otherwise segfault the interpreter or read outside the table on a GPU.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..._checks import check_index_range
from . import interpreter_enabled


@triton.jit
def _bag_forward_kernel(
    table_ptr, idx_ptr, w_ptr, out_ptr,
    bag_size, dim,
    BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    bag = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < dim
    acc = tl.zeros([BLOCK_D], dtype=ACC_DTYPE)
    for start in range(0, bag_size, BLOCK_B):
        offs_b = start + tl.arange(0, BLOCK_B)
        mask_b = offs_b < bag_size
        rows = tl.load(idx_ptr + bag * bag_size + offs_b, mask=mask_b, other=0).to(tl.int64)
        w = tl.load(w_ptr + bag * bag_size + offs_b, mask=mask_b, other=0.0).to(ACC_DTYPE)
        tile = tl.load(
            table_ptr + rows[:, None] * dim + offs_d[None, :],
            mask=mask_b[:, None] & mask_d[None, :], other=0.0,
        ).to(ACC_DTYPE)
        acc += tl.sum(tile * w[:, None], axis=0)
    tl.store(out_ptr + bag * dim + offs_d, acc.to(out_ptr.dtype.element_ty), mask=mask_d)


@triton.jit
def _bag_backward_kernel(
    table_ptr, idx_ptr, w_ptr, grad_out_ptr, grad_table_ptr, grad_w_ptr,
    bag_size, dim,
    BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, ACC_DTYPE: tl.constexpr,
    NEED_TABLE_GRAD: tl.constexpr, NEED_WEIGHT_GRAD: tl.constexpr,
):
    bag = tl.program_id(0).to(tl.int64)
    for start in range(0, bag_size, BLOCK_B):
        offs_b = start + tl.arange(0, BLOCK_B)
        mask_b = offs_b < bag_size
        rows = tl.load(idx_ptr + bag * bag_size + offs_b, mask=mask_b, other=0).to(tl.int64)
        w = tl.load(w_ptr + bag * bag_size + offs_b, mask=mask_b, other=0.0).to(ACC_DTYPE)
        grad_w = tl.zeros([BLOCK_B], dtype=ACC_DTYPE)
        for d0 in range(0, dim, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            mask_d = offs_d < dim
            mask = mask_b[:, None] & mask_d[None, :]
            g = tl.load(grad_out_ptr + bag * dim + offs_d, mask=mask_d, other=0.0).to(ACC_DTYPE)
            if NEED_TABLE_GRAD:
                tl.atomic_add(grad_table_ptr + rows[:, None] * dim + offs_d[None, :], w[:, None] * g[None, :], mask=mask)
            if NEED_WEIGHT_GRAD:
                tile = tl.load(table_ptr + rows[:, None] * dim + offs_d[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
                grad_w += tl.sum(tile * g[None, :], axis=1)
        if NEED_WEIGHT_GRAD:
            tl.store(grad_w_ptr + bag * bag_size + offs_b, grad_w, mask=mask_b)


@triton.jit
def _bag_backward_reverse_kernel(
    table_ptr, w_ptr, grad_out_ptr, grad_table_ptr, grad_w_ptr,
    row_ids_ptr, seg_start_ptr, seg_end_ptr, perm_ptr,
    bag_size, dim, total,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, ACC_DTYPE: tl.constexpr,
    NEED_TABLE_GRAD: tl.constexpr, NEED_WEIGHT_GRAD: tl.constexpr,
):
    """Atomic-free backward: program i owns touched row ``row_ids[i]`` and reads its contributors, the flat positions
    ``perm[seg_start[i]:seg_end[i]]`` (sorted, so the summation order is fixed: deterministic results).

    grad_table[row, d] = Σ_c w[c] · grad_out[bag(c), d]           (written once, no atomics)
    grad_w[c]          = Σ_d table[row, d] · grad_out[bag(c), d]  (same loads; one partial per d-tile, summed on host)
    """
    pid = tl.program_id(0)
    row = tl.load(row_ids_ptr + pid).to(tl.int64)
    start = tl.load(seg_start_ptr + pid).to(tl.int64)
    end = tl.load(seg_end_ptr + pid).to(tl.int64)
    for d0 in range(0, dim, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask_d = offs_d < dim
        t_row = tl.load(table_ptr + row * dim + offs_d, mask=mask_d, other=0.0).to(ACC_DTYPE)
        acc = tl.zeros([BLOCK_D], dtype=ACC_DTYPE)
        for c0 in range(start, end, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            mask_c = offs_c < end
            pos = tl.load(perm_ptr + offs_c, mask=mask_c, other=0).to(tl.int64)
            bag = pos // bag_size
            g = tl.load(
                grad_out_ptr + bag[:, None] * dim + offs_d[None, :],
                mask=mask_c[:, None] & mask_d[None, :], other=0.0,
            ).to(ACC_DTYPE)
            if NEED_TABLE_GRAD:
                w = tl.load(w_ptr + pos, mask=mask_c, other=0.0).to(ACC_DTYPE)
                acc += tl.sum(g * w[:, None], axis=0)
            if NEED_WEIGHT_GRAD:
                part = tl.sum(g * t_row[None, :], axis=1)
                tl.store(grad_w_ptr + (d0 // BLOCK_D) * total + pos, part, mask=mask_c)
        if NEED_TABLE_GRAD:
            tl.store(grad_table_ptr + row * dim + offs_d, acc, mask=mask_d)


def reverse_indices(indices: torch.Tensor, rows: int):
    """The reverse map (CSR) of a bag index tensor, host-side torch ops.

    Returns (row_ids, seg_start, seg_end, perm): ``perm`` lists flat positions of ``indices`` grouped by row (a stable
    sort, so each row's contributors stay in position order); touched row ``row_ids[i]`` owns
    ``perm[seg_start[i]:seg_end[i]]``. Rows are ordered by hit count, most first, so the longest programs start first
    (balance on a GPU). Counting = ``bincount``, prefix sum = ``cumsum``.
    """
    flat = indices.reshape(-1).long()
    perm = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=rows)
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    touched = torch.nonzero(counts).squeeze(1)
    order = torch.argsort(counts[touched], descending=True, stable=True)
    row_ids = touched[order]
    return row_ids, starts[row_ids], ends[row_ids], perm


def check_rows(indices: torch.Tensor, rows: int) -> None:
    """Refuse indices outside [0, rows) before a launch: the kernels have no bounds checks.

    CPU tensors (the interpreter): a host-side check that raises memlab's ValueError. CUDA tensors: an asynchronous
    device-side assert (``torch._assert_async``; no device sync, the same failure as torch's own CUDA kernels give),
    because a host-side check would stall every launch on a sync.
    """
    if not indices.numel():
        return
    if indices.is_cuda:
        lo, hi = torch.aminmax(indices)
        torch._assert_async(
            (lo >= 0) & (hi < rows),
            f"memlab's Triton EmbeddingBag got an index outside [0, {rows}); "
            "call memlab.embedding_bag(..., check=True) to see the values",
        )
    else:
        check_index_range(indices, rows)


def _acc_dtype(dtype: torch.dtype):
    return (tl.float64, torch.float64) if dtype == torch.float64 else (tl.float32, torch.float32)


def _block_sizes(bag_size: int, dim: int) -> tuple[int, int]:
    """Tile shape. The interpreter pays per program, so it gets the widest tiles; GPUs get 128-column tiles."""
    max_d = 1024 if interpreter_enabled() else 128
    block_d = min(triton.next_power_of_2(max(dim, 1)), max_d)
    block_b = min(triton.next_power_of_2(max(bag_size, 1)), 32)
    return block_b, block_d


def _in_input_dtypes(grad_table, grad_w, table, weights):
    """Cast gradients accumulated in fp32/fp64 back to the dtypes of the tensors they belong to."""
    return (None if grad_table is None else grad_table.to(table.dtype),
            None if grad_w is None else grad_w.to(weights.dtype))


def bag_forward(table: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Launch the forward kernel on contiguous (rows, dim), (bags, B), (bags, B); returns (bags, dim)."""
    n_bags, bag_size = indices.shape
    dim = table.shape[1]
    check_rows(indices, table.shape[0])
    out = torch.empty(n_bags, dim, dtype=table.dtype, device=table.device)
    if n_bags == 0 or dim == 0:
        return out
    block_b, block_d = _block_sizes(bag_size, dim)
    acc_tl, _ = _acc_dtype(table.dtype)
    grid = (n_bags, triton.cdiv(dim, block_d))
    _bag_forward_kernel[grid](
        table, indices, weights, out, bag_size, dim, BLOCK_B=block_b, BLOCK_D=block_d, ACC_DTYPE=acc_tl
    )
    return out


def bag_backward(table, indices, weights, grad_out, need_table_grad=True, need_weight_grad=True):
    """Gradients of ``bag_forward``: (grad_table or None, grad_weights or None)."""
    n_bags, bag_size = indices.shape
    rows, dim = table.shape
    check_rows(indices, rows)
    acc_tl, acc_torch = _acc_dtype(table.dtype)
    grad_table = torch.zeros(rows, dim, dtype=acc_torch, device=table.device) if need_table_grad else None
    grad_w = torch.zeros(n_bags, bag_size, dtype=acc_torch, device=table.device) if need_weight_grad else None
    if n_bags and bag_size and dim:
        block_b, block_d = _block_sizes(bag_size, dim)
        _bag_backward_kernel[(n_bags,)](
            table, indices, weights, grad_out.contiguous(),
            grad_table if need_table_grad else table, grad_w if need_weight_grad else weights,
            bag_size, dim, BLOCK_B=block_b, BLOCK_D=block_d, ACC_DTYPE=acc_tl,
            NEED_TABLE_GRAD=need_table_grad, NEED_WEIGHT_GRAD=need_weight_grad,
        )
    return _in_input_dtypes(grad_table, grad_w, table, weights)


def bag_backward_reverse(table, indices, weights, grad_out, need_table_grad=True, need_weight_grad=True):
    """Atomic-free gradients of ``bag_forward`` through the reverse map: (grad_table or None, grad_weights or None).

    Deterministic (fixed summation order, no atomics); rows nobody read get exact zeros.
    """
    n_bags, bag_size = indices.shape
    rows, dim = table.shape
    check_rows(indices, rows)
    acc_tl, acc_torch = _acc_dtype(table.dtype)
    grad_table = torch.zeros(rows, dim, dtype=acc_torch, device=table.device) if need_table_grad else None
    total = n_bags * bag_size
    grad_w = None
    if total and dim:
        row_ids, seg_start, seg_end, perm = reverse_indices(indices, rows)
        block_c = min(triton.next_power_of_2(max(int(indices.numel() and (seg_end - seg_start).max()), 1)),
                      64 if interpreter_enabled() else 32)
        _, block_d = _block_sizes(bag_size, dim)
        n_dtiles = triton.cdiv(dim, block_d)
        partial = torch.zeros(n_dtiles, total, dtype=acc_torch, device=table.device) if need_weight_grad else None
        _bag_backward_reverse_kernel[(row_ids.numel(),)](
            table, weights, grad_out.contiguous(),
            grad_table if need_table_grad else table, partial if need_weight_grad else weights,
            row_ids, seg_start, seg_end, perm, bag_size, dim, total,
            BLOCK_C=block_c, BLOCK_D=block_d, ACC_DTYPE=acc_tl,
            NEED_TABLE_GRAD=need_table_grad, NEED_WEIGHT_GRAD=need_weight_grad,
        )
        if need_weight_grad:
            grad_w = partial.sum(0).view(n_bags, bag_size)
    elif need_weight_grad:
        grad_w = torch.zeros(n_bags, bag_size, dtype=acc_torch, device=table.device)
    return _in_input_dtypes(grad_table, grad_w, table, weights)


#: Backward strategies of the Triton EmbeddingBag. ``MEMLAB_BAG_BACKWARD`` (atomic|reverse) overrides the default.
BACKWARD_STRATEGIES = ("atomic", "reverse")

#: Default backward strategy — NOT chosen by measurement yet: no GPU was available when it was set, and the
#: interpreter cannot time kernels. Reasoning: "atomic" is one launch over bags with no host-side sort, and on a GPU
#: fp32 atomics on distinct rows (the sparse product-key regime) are nearly free; "reverse" pays a sort + bincount +
#: cumsum but writes every row once, in a fixed order (bit-reproducible), and avoids atomic contention on hot rows
#: (MemoryFormer: each row is hit by ~N/2^τ tokens per step). Run ``kernels/bench.py`` on a GPU and revisit.
DEFAULT_BACKWARD = "atomic"


def resolve_backward(backward: str | None) -> str:
    """None → ``MEMLAB_BAG_BACKWARD`` or ``DEFAULT_BACKWARD``; validates the name."""
    import os

    if backward is None:
        backward = os.environ.get("MEMLAB_BAG_BACKWARD", DEFAULT_BACKWARD)
    if backward not in BACKWARD_STRATEGIES:
        raise ValueError(f"backward={backward!r} is not one of {BACKWARD_STRATEGIES}")
    return backward


class TritonEmbeddingBag(torch.autograd.Function):
    """Autograd wrapper: forward and backward both run memlab's Triton kernels."""

    @staticmethod
    def forward(ctx, table, indices, weights, backward="atomic"):
        table, indices, weights = table.contiguous(), indices.contiguous(), weights.contiguous()
        ctx.save_for_backward(table, indices, weights)
        ctx.strategy = backward
        return bag_forward(table, indices, weights)

    @staticmethod
    def backward(ctx, grad_out):
        table, indices, weights = ctx.saved_tensors
        fn = bag_backward_reverse if ctx.strategy == "reverse" else bag_backward
        grad_table, grad_w = fn(
            table, indices, weights, grad_out,
            need_table_grad=ctx.needs_input_grad[0], need_weight_grad=ctx.needs_input_grad[2],
        )
        return grad_table, None, grad_w, None
