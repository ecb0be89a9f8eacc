"""Why hash buckets are used unevenly: measures that split the non-uniformity of sign hashing into its causes.

A table hashes a chunk z ∈ R^τ to its τ sign bits. Its bucket distribution P is uniform exactly when the bits are
fair coins (P(bit = 1) = ½) *and* independent. The KL divergence from uniform splits accordingly (plug-in, per table):

    KL(P ‖ U) = log 2^τ − H(P) = Σ_i [log 2 − H(b_i)]  +  [Σ_i H(b_i) − H(P)]
                                  bias: unfair bits        dependence: the bits' total correlation

Both parts are ≥ 0 (``kl_decomposition``). A third limit is the inputs themselves: N tokens with only D distinct
values (MemoryFormer's first layer hashes 256 byte embeddings) reach at most D buckets, and inputs confined to an
r-dimensional subspace meet at most 2·Σ_{i<r} C(τ−1, i) of the 2^τ orthants of a chunk (``max_buckets_for_rank``,
Cover's counting of the regions r-dimensional space is cut into by τ hyperplanes through the origin).

Finite samples bias every plug-in statistic: N uniform draws over R rows leave e^(−N/R) of the rows empty and show a
KL of about (R − 1)/(2N) nats. ``uniform_baseline`` gives the values perfectly uniform hashing would show at the
same N, which is what a measurement should be compared with.
"""
from __future__ import annotations

import math

import torch

from ... import stats
from ...addressing.hashing import sign_codes


def hash_counts(x: torch.Tensor, tau: int) -> torch.Tensor:
    """Bucket histogram per table of inputs x (N, d) cut into d/τ chunks: (d/τ, 2^τ) counts (float64)."""
    if x.shape[-1] % tau:
        raise ValueError(f"width {x.shape[-1]} is not divisible by tau={tau}; try tau in "
                         f"{[t for t in range(2, 17) if x.shape[-1] % t == 0]}")
    return stats.hash_bucket_counts(sign_codes(x.reshape(-1, x.shape[-1] // tau, tau)), tau)


def bit_balance(counts: torch.Tensor) -> torch.Tensor:
    """P(bit i = 1) per table from a bucket histogram (K, 2^τ) (memlab's bit order: bit i of bucket b is (b >> i) & 1):
    (K, τ). ½ is a fair bit."""
    counts = counts.double().reshape(-1, counts.shape[-1])
    tau = int(math.log2(counts.shape[-1]))
    if 2**tau != counts.shape[-1]:
        raise ValueError(f"a bucket histogram has 2^τ columns, got {counts.shape[-1]}")
    bits = ((torch.arange(2**tau).unsqueeze(-1) >> torch.arange(tau)) & 1).double()  # (2^τ, τ)
    return (counts @ bits) / counts.sum(-1, keepdim=True)


def _entropy_rows(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-300).log()).sum(-1)


def kl_decomposition(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per table of a histogram (K, 2^τ): {"kl", "bias", "dependence"} in nats, kl = bias + dependence (module doc)."""
    counts = counts.double().reshape(-1, counts.shape[-1])
    tau = int(math.log2(counts.shape[-1]))
    p = counts / counts.sum(-1, keepdim=True)
    kl = tau * math.log(2) - _entropy_rows(p)
    q = bit_balance(counts)
    bit_entropy = _entropy_rows(torch.stack([q, 1 - q], -1))  # (K, τ)
    bias = (math.log(2) - bit_entropy).sum(-1)
    return {"kl": kl, "bias": bias, "dependence": kl - bias}


def max_buckets_for_rank(tau: int, rank: int) -> int:
    """Most orthants of R^τ that a generic r-dimensional subspace meets: 2·Σ_{i=0}^{r−1} C(τ−1, i)
    (all 2^τ for r ≥ τ)."""
    if rank < 1 or tau < 1:
        raise ValueError(f"need tau >= 1 and rank >= 1, got tau={tau}, rank={rank}")
    return min(2**tau, 2 * sum(math.comb(tau - 1, i) for i in range(min(rank, tau))))


def uniform_baseline(tokens: int, rows: int, trials: int = 20, seed: int = 0) -> dict[str, float]:
    """What perfectly uniform hashing shows with ``tokens`` draws over ``rows`` rows, averaged over ``trials`` tables:
    ``usage_summary``'s numbers (fraction_used, entropy, kl_uniform, gini, top_50/90/99) — the sampling floor."""
    gen = torch.Generator().manual_seed(seed)
    summaries = [stats.usage_summary(stats.row_counts(torch.randint(rows, (tokens,), generator=gen), rows))
                 for _ in range(trials)]
    keys = ("fraction_used", "entropy", "kl_uniform", "gini", "top_50", "top_90", "top_99")
    return {k: sum(s[k] for s in summaries) / len(summaries) for k in keys}


def mean_summary(counts: torch.Tensor) -> dict[str, float]:
    """``usage_summary`` of every table (or head) of a 2-D histogram, averaged over tables."""
    per = stats.usage_per_group(counts.double().reshape(-1, counts.shape[-1]))
    return {k: sum(s[k] for s in per) / len(per) for k in per[0] if k not in ("rows", "hits")}


def sign_bias(x: torch.Tensor) -> torch.Tensor:
    """|P(x_i ≥ 0) − ½| per coordinate of inputs (N, d): 0 for a fair bit, ½ for one that never changes sign."""
    return ((x >= 0).double().mean(0) - 0.5).abs()


def chunk_correlation(x: torch.Tensor, tau: int) -> dict[str, float]:
    """Mean |Pearson correlation| of coordinate pairs inside one chunk of τ vs pairs in different chunks, and the
    participation ratio (Σλ)²/Σλ² of the covariance (the effective number of dimensions; d for isotropic inputs)."""
    x = x.reshape(-1, x.shape[-1]).double()
    d = x.shape[-1]
    if d % tau:
        raise ValueError(f"width {d} is not divisible by tau={tau}")
    c = torch.corrcoef(x.T).nan_to_num(0.0).abs()
    chunk = torch.arange(d) // tau
    same = (chunk[:, None] == chunk[None, :]) & ~torch.eye(d, dtype=torch.bool)
    other = chunk[:, None] != chunk[None, :]
    eig = torch.linalg.eigvalsh(torch.cov(x.T)).clamp_min(0)
    return {"within_chunk": float(c[same].mean()) if same.any() else float("nan"),
            "across_chunks": float(c[other].mean()) if other.any() else float("nan"),
            "effective_dims": float(eig.sum() ** 2 / (eig**2).sum())}


def distinct_inputs(x: torch.Tensor) -> int:
    """How many distinct rows (token vectors) x (N, d) holds: an upper bound on the buckets any table can reach."""
    return int(torch.unique(x.reshape(-1, x.shape[-1]), dim=0).shape[0])
