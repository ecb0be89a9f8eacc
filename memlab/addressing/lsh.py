"""Random-hyperplane LSH (Charikar 2002): the idea behind MemoryFormer's sign hashing (Ding et al. 2024, Memory Layer).

A hyperplane through the origin with a random Gaussian normal r cuts the sphere in two; two vectors u, v at angle θ
land on the same side with probability

    P[sign(r·u) = sign(r·v)] = 1 − θ/π

(the plane separates them exactly when it falls inside the angle θ, a 2-D argument). With b independent planes the
b-bit codes of u and v agree with probability (1 − θ/π)^b: close vectors share a bucket, far ones rarely do.

MemoryFormer uses the coordinate axes as its "hyperplanes" (no projection before hashing: bit i is [z_i ≥ 0]), so the
guarantee above, which needs *random* directions, holds only when the inputs look isotropic — one reason for the
LayerNorm in front. Bits here follow ``memlab.hashing``: bit i is 1 when the i-th projection is ≥ 0.
"""
from __future__ import annotations

import math

import torch

from .._checks import check_positive_int


def random_hyperplanes(dim: int, n_planes: int, generator: torch.Generator | None = None,
                       dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normals of ``n_planes`` random hyperplanes through the origin: (n_planes, dim), i.i.d. N(0, 1) entries.

    Gaussian normals are uniformly distributed in direction, which is what the 1 − θ/π law needs.
    """
    check_positive_int(dim, "dim")
    check_positive_int(n_planes, "n_planes")
    return torch.randn(n_planes, dim, generator=generator, dtype=dtype)


def hyperplane_bits(x: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
    """Sign bits of x against every plane: x (..., dim), planes (b, dim) → bool (..., b), bit = [r·x ≥ 0]."""
    if x.shape[-1] != planes.shape[-1]:
        raise ValueError(f"x has dim {x.shape[-1]} but the planes have dim {planes.shape[-1]}")
    return (x.to(planes.dtype) @ planes.T) >= 0


def collision_probability(theta, bits: int = 1):
    """Theory: probability that two vectors at angle θ (radians, in [0, π]) share all ``bits`` sign bits,
    (1 − θ/π)^bits. Accepts a float or a tensor."""
    if isinstance(theta, torch.Tensor):
        return (1 - theta / math.pi).clamp(0, 1) ** bits
    return min(1.0, max(0.0, 1 - float(theta) / math.pi)) ** bits


def pairs_at_angle(theta: float, dim: int, n_pairs: int, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_pairs`` random unit-vector pairs (u, v), each at exactly angle θ: two (n_pairs, dim) tensors.

    u is uniform on the sphere; v = cos θ · u + sin θ · w with w a random unit vector orthogonal to u.
    """
    if dim < 2:
        raise ValueError(f"two vectors at an angle need dim >= 2, got {dim}")
    u = torch.randn(n_pairs, dim, generator=generator, dtype=dtype)
    u = u / u.norm(dim=-1, keepdim=True)
    w = torch.randn(n_pairs, dim, generator=generator, dtype=dtype)
    w = w - (w * u).sum(-1, keepdim=True) * u
    w = w / w.norm(dim=-1, keepdim=True)
    return u, math.cos(theta) * u + math.sin(theta) * w


def measured_collision_rate(theta: float, dim: int, n_pairs: int, n_planes: int,
                            generator: torch.Generator | None = None) -> float:
    """Monte-Carlo estimate of the single-bit collision probability at angle θ.

    ``n_pairs`` pairs at angle θ are hashed by ``n_planes`` random planes; the rate is the fraction of the
    n_pairs · n_planes bits that agree. Every sample is Bernoulli(1 − θ/π), so the standard error is
    ≤ 0.5 / √(n_pairs · n_planes).
    """
    u, v = pairs_at_angle(theta, dim, n_pairs, generator)
    planes = random_hyperplanes(dim, n_planes, generator)
    return float((hyperplane_bits(u, planes) == hyperplane_bits(v, planes)).double().mean())


def collision_curve(thetas, dim: int = 32, n_pairs: int = 1000, n_planes: int = 64,
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """Measured vs theoretical collision probability over ``thetas``.

    Returns {"theta", "theory", "measured", "abs_error", "std_error"}: float64 tensors, one entry per angle;
    ``std_error`` is the binomial standard error √(p(1−p)/(n_pairs·n_planes)) of each measurement.
    """
    gen = torch.Generator().manual_seed(seed)
    theta = torch.as_tensor(thetas).to(torch.float64).clamp(0, math.pi)  # float32 π rounds above π
    measured = torch.tensor([measured_collision_rate(float(t), dim, n_pairs, n_planes, gen) for t in theta],
                            dtype=torch.float64)
    theory = collision_probability(theta)
    std = (theory * (1 - theory) / (n_pairs * n_planes)).sqrt()
    return {"theta": theta, "theory": theory, "measured": measured, "abs_error": (measured - theory).abs(),
            "std_error": std}


def nearest_vertex_codes(z: torch.Tensor) -> torch.Tensor:
    """Bucket id of the hypercube vertex s_b ∈ {±1}^τ with the largest ⟨z, s_b⟩, found by brute force over 2^τ.

    Equals ``memlab.hashing.sign_codes(z)`` (ties at z_i = 0 aside): sign hashing maps z to its nearest vertex of
    the cube. Exponential in τ — for teaching and tests only.
    """
    from .hashing import bucket_sign_vectors

    signs = bucket_sign_vectors(z.shape[-1], dtype=z.dtype, device=z.device)
    return (z @ signs.T).argmax(-1)


__all__ = [
    "random_hyperplanes",
    "hyperplane_bits",
    "collision_probability",
    "pairs_at_angle",
    "measured_collision_rate",
    "collision_curve",
    "nearest_vertex_codes",
]
