"""Fused MemoryFormer layer in one Triton kernel: addressing (sign codes + p(z)) and the weighted gather, no
intermediate code/weight tensors in the forward (MemoryFormer's Memory Layer, arXiv 2411.12992).

    y[n, :] = Σ_k w(z_k) · T[k·2^τ + h(z_k), :] (+ bias)      z_k = x[n, k·τ : (k+1)·τ]
    h(z) = Σ_i [z_i ≥ 0] · 2^i   (LSB = z_0, sign(0) = +: ``memlab.hashing.sign_codes``)
    p(z) = Π_i σ(2|z_i|/t);   w = p (weighting "paper")  or  w = ‖z‖₁ · p  ("l1")

Forward: program (n, j) owns token n and output columns [j·BLOCK_D, (j+1)·BLOCK_D). It walks the K chunks BLOCK_K at a
time; for each block it reads the τ columns of x (τ is a compile-time constant, so the loop over bits is unrolled),
builds the codes, p and ‖z‖₁ in registers, then loads the [BLOCK_K × BLOCK_D] tile of hashed rows and accumulates
Σ_k w_k · row_k in fp32 (fp64 for fp64 tables). Each d-tile recomputes the addressing of its token: that re-reads
d_in numbers of x per tile against K·BLOCK_D table numbers, a negligible extra.

Backward (``HashReadTriton.backward``): the codes and weights are recomputed from x (a few torch ops on N·d_in
numbers, far cheaper than the gather) by ``torch_hash.hash_address``, i.e. the addressing equations of
``memlab.hashing``. Then the EmbeddingBag backward kernels of
``memlab.reading.kernels.triton_bag`` ("atomic" or "reverse", ``MEMLAB_BAG_BACKWARD``) give, in one pass, the table
gradient (w·grad_out scattered into the hashed rows) and grad_w[n, k] = ⟨grad_out[n], T[row_nk]⟩, which
``torch_hash.addressing_grad`` turns into dx with the closed form ∂p/∂z_i = p·(2/t)·sign(z_i)·σ(−2|z_i|/t)
(``hashing.bucket_probability_grad``, and its "l1" variant). The bias gradient is grad_out summed over tokens.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import interpreter_enabled
from .triton_bag import _acc_dtype, bag_backward, bag_backward_reverse, resolve_backward
from .torch_hash import addressing_grad, hash_address


@triton.jit
def _hash_forward_kernel(
    x_ptr, table_ptr, bias_ptr, out_ptr,
    num_tables, d_out, scale,
    TAU: tl.constexpr, L1: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    tok = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < d_out
    d_in = num_tables * TAU
    acc = tl.zeros([BLOCK_D], dtype=ACC_DTYPE)
    for k0 in range(0, num_tables, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < num_tables
        # addressing in registers: code, p = Π σ(scale·|z_i|), ‖z‖₁ of BLOCK_K chunks at once
        code = tl.zeros([BLOCK_K], dtype=tl.int64)
        p = tl.full([BLOCK_K], 1.0, dtype=ACC_DTYPE)
        norm = tl.zeros([BLOCK_K], dtype=ACC_DTYPE)
        for i in tl.static_range(TAU):
            z = tl.load(x_ptr + tok * d_in + offs_k * TAU + i, mask=mask_k, other=0.0).to(ACC_DTYPE)
            code += (z >= 0).to(tl.int64) << i
            a = tl.abs(z)
            p *= 1.0 / (1.0 + tl.exp(-scale * a))
            if L1:
                norm += a
        if L1:
            w = norm * p
        else:
            w = p
        rows = offs_k.to(tl.int64) * (1 << TAU) + code  # row k·2^τ + h(z_k) of the (K·2^τ, d_out) table
        # the gather: a [BLOCK_K × BLOCK_D] tile of hashed rows, weighted and summed over k
        tile = tl.load(
            table_ptr + rows[:, None] * d_out + offs_d[None, :],
            mask=mask_k[:, None] & mask_d[None, :], other=0.0,
        ).to(ACC_DTYPE)
        # weights are rounded to the table dtype first, as the unfused read does (weights.to(tables.dtype))
        w = w.to(table_ptr.dtype.element_ty).to(ACC_DTYPE)
        acc += tl.sum(tile * w[:, None], axis=0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(ACC_DTYPE)
    tl.store(out_ptr + tok * d_out + offs_d, acc.to(out_ptr.dtype.element_ty), mask=mask_d)


def _block_sizes(num_tables: int, d_out: int) -> tuple[int, int]:
    """Tile shape: widest tiles in the interpreter (it pays per program), 128 columns × ≤32 rows on a GPU."""
    max_d = 1024 if interpreter_enabled() else 128
    block_d = min(triton.next_power_of_2(max(d_out, 1)), max_d)
    block_k = min(triton.next_power_of_2(max(num_tables, 1)), 64 if interpreter_enabled() else 32)
    return block_k, block_d


def hash_forward(x2d, tables, bias, num_tables: int, tau: int, temperature: float, l1: bool) -> torch.Tensor:
    """Launch the fused kernel: x2d (N, K·τ), tables (K·2^τ, d_out), bias (d_out,) or None → (N, d_out) in
    ``tables.dtype``. Inputs are made contiguous here (the interpreter does no stride checks)."""
    x2d, tables = x2d.contiguous(), tables.contiguous()
    n, d_out = x2d.shape[0], tables.shape[1]
    out = torch.empty(n, d_out, dtype=tables.dtype, device=tables.device)
    if n == 0 or d_out == 0:
        return out if bias is None else out + bias
    block_k, block_d = _block_sizes(num_tables, d_out)
    acc_tl, _ = _acc_dtype(tables.dtype)
    grid = (n, triton.cdiv(d_out, block_d))
    _hash_forward_kernel[grid](
        x2d, tables, bias.contiguous() if bias is not None else tables, out,
        num_tables, d_out, 2.0 / temperature,
        TAU=tau, L1=l1, HAS_BIAS=bias is not None,
        BLOCK_K=block_k, BLOCK_D=block_d, ACC_DTYPE=acc_tl,
    )
    return out


class HashReadTriton(torch.autograd.Function):
    """(x2d, tables, bias) → y (N, d_out): the fused Triton forward, the backward described in the module docstring."""

    @staticmethod
    def forward(ctx, x2d, tables, bias, num_tables, tau, temperature, l1, strategy):
        x2d, tables = x2d.contiguous(), tables.contiguous()
        ctx.save_for_backward(x2d, tables)
        ctx.args = (num_tables, tau, temperature, l1)
        ctx.strategy = strategy
        ctx.has_bias = bias is not None
        return hash_forward(x2d, tables, bias, num_tables, tau, temperature, l1)

    @staticmethod
    def backward(ctx, grad_out):
        x2d, tables = ctx.saved_tensors
        need_x, need_table, need_bias = ctx.needs_input_grad[:3]
        rows, w = hash_address(x2d, *ctx.args)  # recomputed: a few ops on N·d_in numbers, far less than the gather
        grad_x = grad_table = grad_bias = None
        if need_x or need_table:
            fn = bag_backward_reverse if ctx.strategy == "reverse" else bag_backward
            grad_table, grad_w = fn(
                tables, rows, w.to(tables.dtype).contiguous(), grad_out.contiguous(),
                need_table_grad=need_table, need_weight_grad=need_x,
            )
            if need_x:
                grad_x = addressing_grad(x2d, grad_w.to(w.dtype), *ctx.args)
        if need_bias and ctx.has_bias:
            grad_bias = grad_out.sum(0)
        return grad_x, grad_table, grad_bias, None, None, None, None, None


def hash_read_triton(x2d: torch.Tensor, tables: torch.Tensor, bias: torch.Tensor | None, num_tables: int, tau: int,
                     temperature: float, l1: bool, backward: str | None = None) -> torch.Tensor:
    """``hash_read``'s Triton backend: x2d (N, K·τ) → (N, d_out) through ``HashReadTriton``.

    ``backward``: "atomic" | "reverse" | None (``MEMLAB_BAG_BACKWARD`` or the EmbeddingBag default).
    """
    return HashReadTriton.apply(x2d, tables, bias, num_tables, tau, temperature, l1, resolve_backward(backward))
