"""Product-key addressing (Lample et al. 2019; Memory Layers at Scale §2; arXiv 1907.05242, 2412.09764).

N = n² keys are never stored: key (i, j) is the concatenation [K1_i, K2_j] of two half-keys, so for a query split into
halves q = [q1, q2] its score is  score(i, j) = q1·K1_i + q2·K2_j.  The top-k over all n² keys needs only the top-k of
each half: a pair whose first half is outside the top-k of q1·K1 is beaten by k pairs that share its second half.
"""
from __future__ import annotations

import torch


def half_scores(q_half: torch.Tensor, half_keys: torch.Tensor) -> torch.Tensor:
    """Scores of every half-key per head: q_half (..., H, dh), half_keys (H, n, dh) → (..., H, n)."""
    return torch.einsum("...hd,hnd->...hn", q_half, half_keys)


def product_topk(
    scores1: torch.Tensor, scores2: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k over the n² sums scores1[i] + scores2[j], from two top-k's over n and one over k².

    scores1, scores2: (..., n) half scores. Returns (scores (..., k) sorted descending, indices (..., k) = i·n + j).
    Cost O(n + k²) per query instead of O(n²).
    """
    n = scores1.shape[-1]
    top1, idx1 = scores1.topk(k, dim=-1)  # (..., k)
    top2, idx2 = scores2.topk(k, dim=-1)
    pair_scores = (top1.unsqueeze(-1) + top2.unsqueeze(-2)).flatten(-2)  # (..., k·k)
    best, flat = pair_scores.topk(k, dim=-1)
    i = idx1.gather(-1, torch.div(flat, k, rounding_mode="floor"))
    j = idx2.gather(-1, flat % k)
    return best, i * n + j


def bruteforce_topk(
    scores1: torch.Tensor, scores2: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for ``product_topk``: materialise all n² scores and take their top-k. O(n²) memory."""
    full = (scores1.unsqueeze(-1) + scores2.unsqueeze(-2)).flatten(-2)  # index i·n + j
    return full.topk(k, dim=-1)
