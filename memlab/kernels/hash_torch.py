"""HashMemory's fast CPU/torch path: fused addressing with a hand-written backward, then one weighted EmbeddingBag.

The unfused composition (``HashMemory.read(*HashMemory.address(x))``) runs ~20 small torch ops and records an autograd
node for each; at 1–16 tokens that overhead, not memory traffic, sets the time. Here:

* fp32 on the CPU with a C compiler present: the C kernel (``memlab.kernels.cpu``) addresses and gathers in one call
  at any number of tokens. Without a gradient that is all; with one, ``HashMemoryC`` keeps the addresses and its
  backward is one more C call (table gradient and ∂L/∂w in one pass) plus the closed form below for x.
* otherwise: ``HashAddress`` — codes and p(z) in a handful of ops, one autograd node whose backward is the closed form
  ∂p/∂z_i = p · (2/t) · sign(z_i) · σ(−2|z_i|/t)   (sign(0) = +, as in the code),
  and for weighting="l1" (w = ‖z‖₁ p) ∂w/∂z_i = sign(z_i) · p · (1 + ‖z‖₁ (2/t) σ(−2|z_i|/t)) — then
  ``F.embedding_bag``, whose own backward gives the table gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import cpu


def address_torch(x2d: torch.Tensor, num_tables: int, tau: int, temperature: float, l1: bool, offsets: torch.Tensor):
    """Codes and weights in a few torch ops (no autograd graph): rows (N, K) int64, w (N, K), p (N, K), ‖z‖₁ or None."""
    z = x2d.reshape(x2d.shape[0], num_tables, tau)
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()  # p is a product of τ factors: compute it in fp32 even for half inputs
    powers = torch.ones((), dtype=torch.int64, device=z.device) << torch.arange(tau, device=z.device)
    rows = ((z >= 0).long() * powers).sum(-1) + offsets
    p, norm = weight_factors(z, temperature, l1)
    return (rows, norm * p, p, norm) if l1 else (rows, p, p, None)


def weight_factors(z: torch.Tensor, temperature: float, l1: bool):
    """Per chunk of z (..., K, τ): p(z) = Π_i σ(2|z_i|/t), and ‖z‖₁ when ``l1`` (else None)."""
    a = z.abs()
    return torch.sigmoid(a * (2.0 / temperature)).prod(-1), (a.sum(-1) if l1 else None)


class HashAddress(torch.autograd.Function):
    """x2d (N, K·τ) → (rows (N, K) int64, weights (N, K)); differentiable in x through the weights."""

    @staticmethod
    def forward(ctx, x2d, num_tables, tau, temperature, l1, offsets):
        rows, w, p, norm = address_torch(x2d, num_tables, tau, temperature, l1, offsets)
        ctx.save_for_backward(x2d, p, norm if norm is not None else p)
        ctx.shape = (num_tables, tau, temperature, l1)
        ctx.mark_non_differentiable(rows)
        return rows, w

    @staticmethod
    def backward(ctx, grad_rows, grad_w):
        x2d, p, norm = ctx.saved_tensors
        return address_grad(x2d, p, norm, grad_w, *ctx.shape), None, None, None, None, None


def address_grad(x2d, p, norm, grad_w, num_tables: int, tau: int, temperature: float, l1: bool) -> torch.Tensor:
    """∂L/∂x from ∂L/∂w by the closed form in the module docstring (``norm`` is ‖z‖₁, used only when ``l1``)."""
    z = x2d.reshape(x2d.shape[0], num_tables, tau).to(p.dtype)
    scale = 2.0 / temperature
    sign = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    s = torch.sigmoid(z.abs() * -scale)  # σ(−2|z_i|/t)
    if l1:
        dz = sign * (p * grad_w).unsqueeze(-1) * (1.0 + norm.unsqueeze(-1) * scale * s)
    else:
        dz = sign * (p * grad_w).unsqueeze(-1) * (scale * s)
    return dz.reshape(x2d.shape).to(x2d.dtype)


class HashMemoryC(torch.autograd.Function):
    """The whole HashMemory on the C kernel, with gradients: forward = ``cpu.hash_forward`` (keeping the addresses),
    backward = ``cpu.gather_backward`` (table gradient and ∂L/∂w in one pass) + ``address_grad`` for x + Σ for the
    bias. fp32 CPU only (``cpu.supports``); not twice differentiable."""

    @staticmethod
    def forward(ctx, x2d, tables, bias, num_tables, tau, temperature, l1):
        out, rows, w = cpu.hash_forward(x2d, tables, bias, num_tables, tau, temperature, l1, addresses=True)
        ctx.save_for_backward(x2d, tables, rows, w)
        ctx.shape = (num_tables, tau, temperature, l1)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x2d, tables, rows, w = ctx.saved_tensors
        need_x, need_tables, need_bias = ctx.needs_input_grad[:3]
        grad_tables, grad_w = cpu.gather_backward(grad_out, tables, rows, w, need_tables, need_x)
        grad_x = None
        if need_x:
            num_tables, tau, temperature, l1 = ctx.shape
            if l1:  # w = ‖z‖₁·p: recompute both factors (a handful of element-wise ops)
                p, norm = weight_factors(x2d.reshape(x2d.shape[0], num_tables, tau), temperature, True)
            else:
                p, norm = w, None
            grad_x = address_grad(x2d, p, norm, grad_w, *ctx.shape)
        grad_bias = grad_out.sum(0) if need_bias else None
        return grad_x, grad_tables, grad_bias, None, None, None, None


def hash_memory_forward(module, x: torch.Tensor, use_c: bool | None = None) -> torch.Tensor:
    """HashMemory.forward on the torch backend (see the module docstring for the routes).

    ``use_c=False`` forces the pure-torch route (benchmarks use it to show what each step buys); None: C when possible.
    """
    params = module._parameters  # plain dict look-ups: nn.Module.__getattr__ costs ~1 µs each at 1 token
    tables, bias = params["tables"], params.get("bias")
    flat = x.dim() == 2
    x2d = x if flat else x.reshape(-1, module.in_features)
    l1 = module.weighting == "l1"
    grad_mode = torch.is_grad_enabled()
    need_grad = grad_mode and (
        x.requires_grad or tables.requires_grad or (bias is not None and bias.requires_grad))
    args = (module.num_tables, module.tau, module.temperature, l1)
    if use_c is not False and cpu.supports(x2d, tables) and cpu.available():
        if need_grad:
            out = HashMemoryC.apply(x2d, tables, bias, *args)
        else:
            out = cpu.hash_forward(x2d, tables, bias, *args)
        return out if flat else out.reshape(*x.shape[:-1], module.out_features)
    if grad_mode and x.requires_grad:
        rows, w = HashAddress.apply(x2d, *args, module.table_offsets)
    else:
        rows, w, _, _ = address_torch(x2d, *args, module.table_offsets)
    out = F.embedding_bag(rows, tables, mode="sum", per_sample_weights=w.to(tables.dtype))
    if bias is not None:
        out = out + bias
    return out if flat else out.reshape(*x.shape[:-1], module.out_features)
