"""``hash_read``'s torch backend: MemoryFormer's addressing as one autograd node, then ``F.embedding_bag``.

The unfused composition ``embedding_bag(tables, *HashMemory.address(x))`` records an autograd node for each of its
~20 small ops; at 1–16 tokens that bookkeeping, not memory traffic, sets the time. Here the addressing is one node:

* forward: ``sign_codes`` and ``bucket_probability`` (or ``l1_bucket_weight``) of ``memlab.hashing`` —
  the equations themselves, called, not copied;
* backward: ∂L/∂x from ∂L/∂w through the equations' closed-form derivatives (``bucket_probability_grad``,
  ``l1_bucket_weight_grad``), no graph through the τ-fold product.

The reading is ``F.embedding_bag``, whose own backward gives the table gradient. The C and Triton backends reuse
``addressing_grad`` for their ∂L/∂x, so all three backends share one derivative.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ...addressing.hashing import bucket_probability, bucket_probability_grad, l1_bucket_weight, l1_bucket_weight_grad
from ...addressing.hashing import sign_codes


@functools.lru_cache(maxsize=64)
def table_offsets(num_tables: int, tau: int, device: torch.device) -> torch.Tensor:
    """First row of every table in the stacked (K·2^τ, d_out) parameter: k·2^τ, as int64 (cached per shape)."""
    return torch.arange(num_tables, dtype=torch.int64, device=device) << tau


def chunks(x2d: torch.Tensor, num_tables: int, tau: int) -> torch.Tensor:
    """(N, K·τ) → (N, K, τ); half-precision inputs are hashed and weighted in fp32 (p is a product of τ factors)."""
    z = x2d.reshape(x2d.shape[0], num_tables, tau)
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


def hash_address(x2d: torch.Tensor, num_tables: int, tau: int, temperature: float, l1: bool):
    """Rows (N, K) int64 into the stacked tables, and weights (N, K): the addressing equations, no autograd graph."""
    z = chunks(x2d, num_tables, tau)
    rows = sign_codes(z) + table_offsets(num_tables, tau, z.device)
    weights = l1_bucket_weight(z, temperature) if l1 else bucket_probability(z, temperature)
    return rows, weights


def addressing_grad(x2d: torch.Tensor, grad_w: torch.Tensor, num_tables: int, tau: int, temperature: float,
                    l1: bool) -> torch.Tensor:
    """∂L/∂x (N, K·τ) from ∂L/∂w (N, K): the chain rule through ``bucket_probability_grad`` / ``l1_bucket_weight_grad``."""
    z = chunks(x2d, num_tables, tau).to(grad_w.dtype)
    dw_dz = l1_bucket_weight_grad(z, temperature) if l1 else bucket_probability_grad(z, temperature)
    return (grad_w.unsqueeze(-1) * dw_dz).reshape(x2d.shape).to(x2d.dtype)


class HashAddress(torch.autograd.Function):
    """x2d (N, K·τ) → (rows (N, K) int64, weights (N, K)); differentiable in x through the weights.

    ``kernels``: (address, input_grad), the two functions of a backend with the signatures of ``hash_address`` and
    ``addressing_grad`` (default: these, in torch ops; the C backend passes its own, ``cpu.hash_address_c``)."""

    @staticmethod
    def forward(ctx, x2d, num_tables, tau, temperature, l1, kernels=None):
        address, ctx.input_grad = kernels or (hash_address, addressing_grad)
        rows, w = address(x2d, num_tables, tau, temperature, l1)
        ctx.save_for_backward(x2d)
        ctx.shape = (num_tables, tau, temperature, l1)
        ctx.mark_non_differentiable(rows)
        return rows, w

    @staticmethod
    def backward(ctx, grad_rows, grad_w):
        (x2d,) = ctx.saved_tensors
        return ctx.input_grad(x2d, grad_w, *ctx.shape), None, None, None, None, None


def hash_read_torch(x2d: torch.Tensor, tables: torch.Tensor, bias: torch.Tensor | None, num_tables: int, tau: int,
                    temperature: float, l1: bool, sparse: bool = False) -> torch.Tensor:
    """x2d (N, K·τ), tables (K·2^τ, d_out), bias (d_out,) or None → (N, d_out) in ``tables.dtype``.

    ``sparse``: the table gradient is ``F.embedding_bag(sparse=True)``'s row-sparse COO tensor (one row per read,
    uncoalesced) instead of a dense (K·2^τ, d_out) one."""
    if torch.is_grad_enabled() and x2d.requires_grad:
        rows, w = HashAddress.apply(x2d, num_tables, tau, temperature, l1)
    else:
        rows, w = hash_address(x2d, num_tables, tau, temperature, l1)
    out = F.embedding_bag(rows, tables, mode="sum", per_sample_weights=w.to(tables.dtype), sparse=sparse)
    return out if bias is None else out + bias
