"""Usage statistics: closed-form values on uniform and one-hot histograms, and the per-table/per-head builders."""
from __future__ import annotations

import math

import pytest
import torch

from memlab import HashMemory, ProductKeyMemory, stats


@pytest.mark.parametrize("n", [2, 10, 256])
def test_uniform_counts(n):
    counts = torch.full((n,), 7.0)
    s = stats.usage_summary(counts)
    assert s["rows"] == n and s["hits"] == 7.0 * n
    assert s["fraction_used"] == 1.0
    assert abs(s["kl_uniform"]) <= 1e-12
    assert abs(s["entropy"] - math.log(n)) <= 1e-12
    assert abs(s["gini"]) <= 1e-12
    assert s["top_50"] == pytest.approx(0.5, abs=1e-12)
    assert s["top_90"] == pytest.approx(math.ceil(0.9 * n - 1e-9) / n, abs=1e-12)
    assert s["top_99"] == pytest.approx(math.ceil(0.99 * n - 1e-9) / n, abs=1e-12)


@pytest.mark.parametrize("n", [2, 10, 256])
def test_one_hot_counts(n):
    counts = torch.zeros(n)
    counts[n // 3] = 42
    s = stats.usage_summary(counts)
    assert s["fraction_used"] == 1 / n
    assert s["gini"] == pytest.approx(1 - 1 / n, abs=1e-12)
    assert s["kl_uniform"] == pytest.approx(math.log(n), abs=1e-12)
    assert s["entropy"] == 0.0
    assert s["top_50"] == s["top_90"] == s["top_99"] == 1 / n


def test_known_small_histogram():
    counts = torch.tensor([3.0, 1.0, 0.0, 0.0])
    p = torch.tensor([0.75, 0.25], dtype=torch.float64)
    assert stats.fraction_used(counts) == 0.5
    assert stats.entropy(counts) == pytest.approx(float(-(p * p.log()).sum()), abs=1e-12)
    assert stats.kl_from_uniform(counts) == pytest.approx(math.log(4) - stats.entropy(counts), abs=1e-12)
    # Gini of (0, 0, 1/4, 3/4): mean absolute difference / (2 · mean)
    vals = [0, 0, 0.25, 0.75]
    mad = sum(abs(a - b) for a in vals for b in vals) / 16
    assert stats.gini(counts) == pytest.approx(mad / (2 * 0.25), abs=1e-12)
    assert stats.rows_for_share(counts, 0.75) == 0.25
    assert stats.rows_for_share(counts, 0.76) == 0.5
    assert stats.rows_for_share(counts, 1.0) == 0.5


def test_row_counts_plain_and_weighted():
    idx = torch.tensor([[0, 2, 2], [4, 2, 0]])
    w = torch.tensor([[0.5, 0.25, 0.25], [1.0, 2.0, 3.0]])
    assert stats.row_counts(idx, 5).tolist() == [2.0, 0.0, 3.0, 0.0, 1.0]
    assert stats.row_counts(idx, 5, w).tolist() == [3.5, 0.0, 2.5, 0.0, 1.0]
    assert stats.row_counts(idx, 5).dtype == torch.float64


def test_hash_bucket_counts_shape_totals_and_values():
    layer = HashMemory(12, 4, tau=3)
    x = torch.randn(5, 7, 12)
    codes = layer.codes(x)
    counts = stats.hash_bucket_counts(codes, 3)
    assert counts.shape == (4, 8)
    assert counts.sum(-1).tolist() == [35.0] * 4
    manual = torch.zeros(4, 8, dtype=torch.float64)
    for c in codes.reshape(-1, 4).tolist():
        for k, b in enumerate(c):
            manual[k, b] += 1
    assert torch.equal(counts, manual)
    # the same histogram read off the flat table rows the layer addresses
    rows, _ = layer.address(x)
    assert torch.equal(stats.row_counts(rows, layer.tables.shape[0]).reshape(4, 8), counts)


def test_pkm_row_counts_per_head_and_score_weighted():
    pkm = ProductKeyMemory(8, n_keys=4, heads=3, topk=2)
    x = torch.randn(6, 5, 8)
    indices, weights = pkm.lookup(x)
    counts = stats.pkm_row_counts(indices, pkm.n_values)
    assert counts.shape == (3, 16)
    assert counts.sum(-1).tolist() == [60.0] * 3  # tokens × topk per head
    for h in range(3):
        assert torch.equal(counts[h], torch.bincount(indices[..., h, :].flatten(), minlength=16).double())
    weighted = stats.pkm_row_counts(indices, pkm.n_values, weights)
    torch.testing.assert_close(weighted.sum(-1), torch.full((3,), 30.0, dtype=torch.float64))  # softmax sums to 1
    for h in range(3):
        manual = torch.zeros(16, dtype=torch.float64)
        for i, w in zip(indices[..., h, :].flatten().tolist(), weights[..., h, :].flatten().tolist()):
            manual[i] += w
        torch.testing.assert_close(weighted[h], manual)


def test_summary_of_2d_counts_treats_all_rows():
    counts = torch.ones(4, 8)
    s = stats.usage_summary(counts)
    assert s["rows"] == 32 and abs(s["gini"]) < 1e-12 and abs(s["kl_uniform"]) < 1e-12
