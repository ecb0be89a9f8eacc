"""Product-key top-k is exact: the same set as a brute-force top-k over all n² keys."""
from __future__ import annotations

import pytest
import torch

from memlab import ProductKeyMemory
from memlab.addressing.product_keys import bruteforce_topk, half_scores, product_topk


def full_scores_loop(s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """All n² scores s1[i] + s2[j] at index i·n + j, built with a loop (independent of bruteforce_topk)."""
    n = s1.shape[-1]
    out = torch.empty(*s1.shape[:-1], n * n, dtype=s1.dtype)
    for i in range(n):
        out[..., i * n:(i + 1) * n] = s1[..., i:i + 1] + s2
    return out


@pytest.mark.parametrize("batch", [(), (5,), (2, 3, 4)])
@pytest.mark.parametrize("n,k", [(1, 1), (4, 1), (4, 4), (7, 3), (16, 5), (32, 32), (50, 8)])
def test_product_topk_equals_bruteforce(n, k, batch):
    gen = torch.Generator().manual_seed(n * 31 + k)
    s1 = torch.randn(*batch, n, generator=gen, dtype=torch.float64)
    s2 = torch.randn(*batch, n, generator=gen, dtype=torch.float64)
    scores, idx = product_topk(s1, s2, k)
    assert scores.shape == idx.shape == (*batch, k)
    full = full_scores_loop(s1, s2)
    ref_scores, ref_idx = full.topk(k, dim=-1)
    # same set of indices (random continuous scores: no ties), sorted descending, scores equal to the full table's
    assert torch.equal(idx.sort(-1).values, ref_idx.sort(-1).values)
    torch.testing.assert_close(scores, ref_scores, atol=1e-14, rtol=0)
    assert (scores[..., :-1] >= scores[..., 1:]).all()
    torch.testing.assert_close(full.gather(-1, idx), scores, atol=1e-14, rtol=0)
    b_scores, b_idx = bruteforce_topk(s1, s2, k)
    assert torch.equal(b_idx.sort(-1).values, ref_idx.sort(-1).values)


def test_index_is_i_times_n_plus_j():
    s1 = torch.tensor([0.0, 10.0, 1.0])
    s2 = torch.tensor([5.0, 0.0, 7.0])
    scores, idx = product_topk(s1, s2, 2)
    assert idx.tolist() == [1 * 3 + 2, 1 * 3 + 0]
    assert scores.tolist() == [17.0, 15.0]


def test_half_scores_einsum():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, 2, 4, generator=gen)  # (..., H, dh)
    keys = torch.randn(2, 6, 4, generator=gen)  # (H, n, dh)
    s = half_scores(q, keys)
    assert s.shape == (3, 2, 6)
    for h in range(2):
        torch.testing.assert_close(s[:, h], q[:, h] @ keys[h].T)


@pytest.mark.parametrize("query_norm", [None, "qk", "layer"])
@pytest.mark.parametrize("n_keys,topk,heads", [(8, 3, 2), (16, 16, 1), (5, 1, 3)])
def test_memory_lookup_equals_bruteforce(n_keys, topk, heads, query_norm):
    torch.manual_seed(n_keys)
    pkm = ProductKeyMemory(12, n_keys=n_keys, heads=heads, topk=topk, k_dim=6, query_norm=query_norm).double()
    x = torch.randn(4, 3, 12, dtype=torch.float64)
    indices, weights = pkm.lookup(x)
    assert indices.shape == weights.shape == (4, 3, heads, topk)
    q, keys = pkm.queries(x), pkm.half_keys()
    scale = (pkm.k_dim // 2) ** -0.5 if query_norm == "qk" else 1.0
    for h in range(heads):
        # the full keys [K1_i, K2_j] materialised, scored against the full query
        full_keys = torch.cat([keys[h, 0].repeat_interleave(n_keys, 0), keys[h, 1].repeat(n_keys, 1)], dim=-1)
        full_q = q[..., h, :, :].flatten(-2)
        full = (full_q @ full_keys.T) * scale  # (4, 3, n²) at index i·n + j
        ref_scores, ref_idx = full.topk(topk, dim=-1)
        assert torch.equal(indices[..., h, :].sort(-1).values, ref_idx.sort(-1).values)
        torch.testing.assert_close(weights[..., h, :], torch.softmax(ref_scores, -1), atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 3, heads, dtype=torch.float64))
