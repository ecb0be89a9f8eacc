"""Product quantization (Jégou et al. 2011) — the idea behind product keys (Lample et al. 2019, arXiv 1907.05242).

Split a vector x ∈ R^d into m sub-vectors of d/m dims, learn a codebook of k centroids per sub-space (k-means), and
store x as m small codes. The implied codebook is the Cartesian product of the m codebooks: k^m codewords from only
m·k stored centroids. Product keys are the same construction with m = 2: n half-keys per half give n² full keys.

    split_subvectors     x (..., d) → (..., m, d/m)
    kmeans               Lloyd's algorithm with k-means++ seeding
    train_pq / pq_encode / pq_decode / pq_error
    product_key_costs    multiply-adds of brute-force vs product-key scoring
"""
from __future__ import annotations

import torch


def split_subvectors(x: torch.Tensor, m: int) -> torch.Tensor:
    """x (..., d) → (..., m, d/m): the m sub-vectors of product quantization. d must be divisible by m."""
    d = x.shape[-1]
    if m < 1 or d % m:
        raise ValueError(f"cannot split d={d} into m={m} equal sub-vectors; choose m dividing {d}")
    return x.unflatten(-1, (m, d // m))


def _sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (n, k) between rows of x (n, d) and c (k, d)."""
    return (x.pow(2).sum(-1, keepdim=True) - 2 * x @ c.T + c.pow(2).sum(-1)).clamp_min(0)


def kmeans(x: torch.Tensor, k: int, iters: int = 25, generator: torch.Generator | None = None) -> torch.Tensor:
    """k centroids (k, d) of the rows of x (n, d): k-means++ seeding, then ``iters`` Lloyd steps.

    An empty cluster keeps its previous centroid. Needs n >= k.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = [x[first]]
    d2 = _sq_dists(x, x[first:first + 1]).squeeze(-1)
    for _ in range(1, k):  # k-means++: sample the next seed with probability ∝ squared distance
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
        nxt = int(torch.multinomial(probs, 1, generator=generator))
        centroids.append(x[nxt])
        d2 = torch.minimum(d2, _sq_dists(x, x[nxt:nxt + 1]).squeeze(-1))
    c = torch.stack(centroids)
    for _ in range(iters):
        assign = _sq_dists(x, c).argmin(-1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype).unsqueeze(-1)
        c = torch.where(counts > 0, sums / counts.clamp_min(1), c)
    return c


def train_pq(x: torch.Tensor, m: int, k: int, iters: int = 25, seed: int = 0) -> torch.Tensor:
    """Codebooks (m, k, d/m): one k-means per sub-space of the training vectors x (n, d)."""
    gen = torch.Generator().manual_seed(seed)
    sub = split_subvectors(x, m)
    return torch.stack([kmeans(sub[:, j], k, iters, gen) for j in range(m)])


def pq_encode(x: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """Codes (n, m): index of the nearest centroid in each sub-space. x (n, d), codebooks (m, k, d/m)."""
    sub = split_subvectors(x, codebooks.shape[0])
    return torch.stack([_sq_dists(sub[:, j], codebooks[j]).argmin(-1) for j in range(codebooks.shape[0])], dim=-1)


def pq_decode(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """Reconstruction (n, d) from codes (n, m): the chosen centroids concatenated."""
    m = codebooks.shape[0]
    return torch.cat([codebooks[j][codes[:, j]] for j in range(m)], dim=-1)


def pq_error(x: torch.Tensor, codebooks: torch.Tensor) -> float:
    """Relative reconstruction error ‖x − decode(encode(x))‖² / ‖x − mean(x)‖² (0: perfect; 1: as bad as the mean)."""
    recon = pq_decode(pq_encode(x, codebooks), codebooks)
    return float((x - recon).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def product_key_costs(n: int, k_dim: int, topk: int) -> dict[str, int]:
    """Multiply-adds to find the top-k of one query among N = n² product keys of width k_dim.

    brute force: score all n² full keys, n²·k_dim. Product keys: two half scorings of n keys of k_dim/2 (n·k_dim)
    plus the topk² candidate sums. (Top-k selection itself is a comparison cost, O(n) vs O(n²), not counted.)
    """
    if k_dim % 2:
        raise ValueError(f"k_dim={k_dim} must be even")
    brute = n * n * k_dim
    product = n * k_dim + topk * topk
    return {"n": n, "N=n^2": n * n, "k_dim": k_dim, "topk": topk, "bruteforce": brute, "product": product,
            "ratio": brute / product}


__all__ = [
    "split_subvectors",
    "kmeans",
    "train_pq",
    "pq_encode",
    "pq_decode",
    "pq_error",
    "product_key_costs",
]
