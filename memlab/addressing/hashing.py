"""MemoryFormer's addressing equations (Ding et al., NeurIPS 2024, §2.1; arXiv 2411.12992).

A chunk z ∈ R^τ of the input is hashed by its sign bits to one of 2^τ buckets, and the bucket's row is scaled by a
differentiable weight p(z). Each equation is one function here.

Bit order (memlab's convention, the paper's formula): bit i of the code is 1 when z_i ≥ 0, and element 0 is the
least-significant bit, h(z) = Σ_i b_i · 2^i. The released code orders bits MSB-first; that only relabels rows.
"""
from __future__ import annotations


import torch


def sign_codes(z: torch.Tensor) -> torch.Tensor:
    """Hash equation h(z) = Σ_i b_i · 2^i with b_i = [z_i ≥ 0] (so sign(0) counts as +).

    z: (..., τ) floating chunks → LongTensor (...,) of bucket ids in [0, 2^τ).
    """
    tau = z.shape[-1]
    powers = torch.pow(2, torch.arange(tau, device=z.device, dtype=torch.long))
    return ((z >= 0).long() * powers).sum(-1)


def bucket_sign_vectors(tau: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """The sign vector s_b ∈ {±1}^τ of every bucket b, in memlab's bit order: (2^τ, τ), row b has s_b[i] = ±1."""
    b = torch.arange(2**tau, device=device).unsqueeze(-1)
    bits = (b >> torch.arange(tau, device=device)) & 1
    return (2 * bits - 1).to(dtype)


def bucket_probability(z: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Closed form of the bucket weight: p(z) = Π_i σ(2|z_i| / t).

    This equals the softmax over all 2^τ buckets of ⟨z, s_b⟩ / t, evaluated at the bucket z hashes to (MemoryFormer's
    Eq. for p(z_k)); the softmax factorises over coordinates, so the cost is O(τ) instead of O(2^τ).
    A plain product is safe: every factor lies in [½, 1), so p ≥ 2^-τ never underflows (and on CPU it is ~50× faster
    than summing log-sigmoids). z: (..., τ) → (...,).
    """
    return torch.sigmoid(2.0 * z.abs() / temperature).prod(-1)


def bucket_probability_bruteforce(z: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The definition of p(z) the closed form replaces: softmax_b(⟨z, s_b⟩ / t) over all 2^τ buckets, read at h(z).

    Exponential in τ: for checking ``bucket_probability`` and for teaching (τ ≤ ~12).
    """
    signs = bucket_sign_vectors(z.shape[-1], dtype=z.dtype, device=z.device)  # (2^τ, τ)
    probs = torch.softmax(z @ signs.T / temperature, dim=-1)  # (..., 2^τ)
    return probs.gather(-1, sign_codes(z).unsqueeze(-1)).squeeze(-1)


def bucket_probability_grad(z: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """∂p/∂z_i of p(z) = Π_j σ(2|z_j|/t), closed form:  ∂p/∂z_i = p(z) · (2/t) · sign(z_i) · σ(−2|z_i|/t).

    (From d/da σ(a) = σ(a)σ(−a): differentiating one factor leaves p times (2/t)·σ(−2|z_i|/t)·d|z_i|/dz_i.)
    Convention at z_i = 0: d|z_i|/dz_i = +1, the one-sided derivative from the side the hash puts 0 on
    (``sign_codes`` counts sign(0) as +), so the gradient is the same as at a tiny positive z_i. Autograd through
    ``torch.abs`` would give 0 there instead; every backend of ``memlab.hash_read`` uses this convention.
    z: (..., τ) → (..., τ).
    """
    a = z.abs()
    sign = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    p = torch.sigmoid(a * (2.0 / temperature)).prod(-1, keepdim=True)
    return sign * p * (2.0 / temperature) * torch.sigmoid(a * (-2.0 / temperature))


def l1_bucket_weight(z: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The released code's weight (C0-Design/MemoryFormer, not the paper): ‖z‖₁ · p(z). The code uses t = 1."""
    return z.abs().sum(-1) * bucket_probability(z, temperature)


def l1_bucket_weight_grad(z: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """∂w/∂z_i of the code's weight w(z) = ‖z‖₁ · p(z), by the product rule on ``bucket_probability_grad``:
    ∂w/∂z_i = sign(z_i) · p(z) · (1 + ‖z‖₁ · (2/t) · σ(−2|z_i|/t)). Same convention at z_i = 0 (sign(0) = +).
    z: (..., τ) → (..., τ)."""
    a = z.abs()
    sign = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    p = torch.sigmoid(a * (2.0 / temperature)).prod(-1, keepdim=True)
    norm = a.sum(-1, keepdim=True)
    return sign * p * (1.0 + norm * (2.0 / temperature) * torch.sigmoid(a * (-2.0 / temperature)))


def suggest_taus(in_features: int, low: int = 3, high: int = 16) -> list[int]:
    """Values of τ in [low, high] that divide ``in_features`` (for error messages)."""
    return [t for t in range(low, high + 1) if in_features % t == 0]


def all_codes(tau: int) -> list[tuple[int, ...]]:
    """Every sign pattern of length τ as a tuple of 0/1 bits, in bucket order (for teaching small τ)."""
    return [tuple((b >> i) & 1 for i in range(tau)) for b in range(2**tau)]


__all__ = [
    "sign_codes",
    "bucket_sign_vectors",
    "bucket_probability",
    "bucket_probability_bruteforce",
    "bucket_probability_grad",
    "l1_bucket_weight",
    "l1_bucket_weight_grad",
    "suggest_taus",
    "all_codes",
]

