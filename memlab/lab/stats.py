"""Usage statistics of memory rows (Lample et al. 2019; XLM's memory evaluator reported these for product keys).

Everything starts from a histogram of row hits: ``row_counts`` counts how often each row was read (optionally
weighted by its read weight, "score-weighted"); ``usage_summary`` turns one histogram into the reported numbers.
``hash_bucket_counts`` and ``pkm_row_counts`` build the per-table (MemoryFormer) and per-head (product keys) histograms.
"""
from __future__ import annotations

import math

import torch


def row_counts(indices: torch.Tensor, n_rows: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Hits per row: a float64 (n_rows,) histogram of ``indices`` (any shape), weighted by ``weights`` if given."""
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n_rows):
        raise ValueError(f"indices must lie in [0, {n_rows}), got [{int(indices.min())}, {int(indices.max())}]")
    w = None if weights is None else weights.detach().reshape(-1).double()
    return torch.bincount(indices.detach().reshape(-1).long(), weights=w, minlength=n_rows).double().cpu()


def hash_bucket_counts(codes: torch.Tensor, tau: int) -> torch.Tensor:
    """Bucket histogram per hash table: codes (..., K) in [0, 2^τ) → (K, 2^τ) counts (MemoryFormer Figure 4)."""
    k = codes.shape[-1]
    flat = codes.detach().reshape(-1, k).long() + torch.arange(k, device=codes.device) * 2**tau
    return row_counts(flat, k * 2**tau).reshape(k, 2**tau)


def pkm_row_counts(indices: torch.Tensor, n_values: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Value-row histogram per head: indices (..., H, k) → (H, n_values) counts (score-weighted if weights given)."""
    heads = indices.shape[-2]
    per_head_idx = indices.detach().movedim(-2, 0).reshape(heads, -1)
    per_head_w = None if weights is None else weights.detach().movedim(-2, 0).reshape(heads, -1)
    return torch.stack([
        row_counts(per_head_idx[h], n_values, None if per_head_w is None else per_head_w[h]) for h in range(heads)
    ])


def _distribution(counts: torch.Tensor) -> torch.Tensor:
    counts = counts.double().reshape(-1)
    total = counts.sum()
    if total <= 0:
        raise ValueError("usage statistics need at least one hit; the counts are all zero")
    return counts / total


def fraction_used(counts: torch.Tensor) -> float:
    """Share of rows read at least once."""
    return float((counts.reshape(-1) > 0).double().mean())


def entropy(counts: torch.Tensor) -> float:
    """Shannon entropy of the usage distribution, in nats (log N for perfectly uniform use of N rows)."""
    p = _distribution(counts)
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def kl_from_uniform(counts: torch.Tensor) -> float:
    """KL(usage ‖ uniform) = log N − entropy, in nats; 0 for perfectly balanced use."""
    return math.log(counts.numel()) - entropy(counts)


def gini(counts: torch.Tensor) -> float:
    """Gini coefficient of the counts: 0 when every row is used equally, → 1 when one row takes every hit."""
    c = _distribution(counts).sort().values
    n = c.numel()
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return float((2 * (ranks * c).sum()) / n - (n + 1) / n)


def rows_for_share(counts: torch.Tensor, share: float) -> float:
    """Fraction of rows, most-hit first, that together take ``share`` of all hits (XLM's top-50/90/99 %).

    Uniform use gives ≈ share; a collapsed memory gives a tiny fraction.
    """
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    c = _distribution(counts).sort(descending=True).values.cumsum(0)
    needed = int(torch.searchsorted(c, torch.tensor(share, dtype=torch.float64) - 1e-12)) + 1
    return min(needed, c.numel()) / c.numel()


def usage_per_group(counts: torch.Tensor) -> list[dict[str, float]]:
    """``usage_summary`` of every row of a 2-D histogram: per table (K, 2^τ) or per head (H, n_values).

    Use this rather than pooling a 2-D histogram: pooled entropy adds log(groups) to the mean per-group entropy.
    """
    if counts.dim() != 2:
        raise ValueError(f"counts must be 2-D (groups, rows), got shape {tuple(counts.shape)}")
    return [usage_summary(c) for c in counts]


def usage_summary(counts: torch.Tensor) -> dict[str, float]:
    """All statistics of one histogram in a dict (rows, hits, fraction_used, entropy, kl_uniform, gini, top_50/90/99)."""
    return {
        "rows": counts.numel(),
        "hits": float(counts.sum()),
        "fraction_used": fraction_used(counts),
        "entropy": entropy(counts),
        "kl_uniform": kl_from_uniform(counts),
        "gini": gini(counts),
        "top_50": rows_for_share(counts, 0.50),
        "top_90": rows_for_share(counts, 0.90),
        "top_99": rows_for_share(counts, 0.99),
    }
