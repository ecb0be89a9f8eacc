"""memlab.embedding_bag against a float64 loop reference, on both backends (Triton under the interpreter on CPU)."""
from __future__ import annotations

import math

import pytest
import torch

import memlab
from memlab.reading.bag import resolve_backend

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=2e-2, rtol=1e-2),
       torch.float64: dict(atol=1e-12, rtol=1e-12)}


def loop_reference(table, indices, weights):
    """out[n] = Σ_j w[n, j] · table[idx[n, j]] with Python loops in float64; (..., B) → (..., dim)."""
    t = table.detach().double().cpu()
    indices = indices.cpu()
    lead, bag = indices.shape[:-1], indices.shape[-1]
    idx = indices.reshape(math.prod(lead), bag)
    w = torch.ones(idx.shape, dtype=torch.float64) if weights is None else weights.detach().double().cpu().reshape(math.prod(lead), bag)
    out = torch.zeros(idx.shape[0], t.shape[1], dtype=torch.float64)
    for n in range(idx.shape[0]):
        for j in range(bag):
            out[n] += w[n, j] * t[int(idx[n, j])]
    return out.reshape(*lead, t.shape[1])


def make_indices(shape, rows, dtype, gen):
    """Random indices with forced duplicates within each bag (first two equal) and across bags (row 0 everywhere)."""
    idx = torch.randint(0, rows, shape, generator=gen)
    if shape[-1] >= 2:
        idx[..., 1] = idx[..., 0]  # duplicate inside a bag
    if shape[-1] >= 3:
        idx[..., 2] = 0  # the same row in every bag
    return idx.to(dtype)


@pytest.mark.parametrize("table_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("bag", [0, 1, 5])
@pytest.mark.parametrize("dim", [1, 7, 123])
@pytest.mark.parametrize("lead", [(3,), (2, 3)])
def test_forward_matches_loop_reference(backend, device, lead, dim, bag, index_dtype, table_dtype):
    gen = torch.Generator().manual_seed(dim * 100 + bag)
    rows = 11
    table = torch.randn(rows, dim, generator=gen).to(device, table_dtype)
    indices = make_indices((*lead, bag), rows, index_dtype, gen).to(device)
    weights = torch.randn(*lead, bag, generator=gen).to(device, table_dtype)
    out = memlab.embedding_bag(table, indices, weights, backend=backend)
    assert out.shape == (*lead, dim)
    assert out.dtype == table_dtype and out.device == table.device
    torch.testing.assert_close(out.double().cpu(), loop_reference(table, indices, weights), **TOL[table_dtype])


@pytest.mark.parametrize("bag", [1, 4])
def test_weights_none_means_ones(backend, device, bag):
    gen = torch.Generator().manual_seed(1)
    table = torch.randn(9, 5, generator=gen).to(device)
    indices = make_indices((4, bag), 9, torch.int64, gen).to(device)
    out = memlab.embedding_bag(table, indices, None, backend=backend)
    ones = memlab.embedding_bag(table, indices, torch.ones(4, bag, device=device), backend=backend)
    torch.testing.assert_close(out, ones)
    torch.testing.assert_close(out.double().cpu(), loop_reference(table, indices, None), **TOL[torch.float32])


def test_one_dimensional_indices_are_one_bag(backend, device):
    gen = torch.Generator().manual_seed(2)
    table = torch.randn(6, 4, generator=gen).to(device)
    indices = torch.tensor([5, 0, 5], device=device)
    weights = torch.tensor([0.5, -1.0, 2.0], device=device)
    out = memlab.embedding_bag(table, indices, weights, backend=backend)
    assert out.shape == (4,)
    torch.testing.assert_close(out, 2.5 * table[5] - table[0])


def test_fp64_matches_reference_tightly(backend, device):
    gen = torch.Generator().manual_seed(3)
    table = torch.randn(13, 7, generator=gen, dtype=torch.float64).to(device)
    indices = make_indices((5, 6), 13, torch.int64, gen).to(device)
    weights = torch.randn(5, 6, generator=gen, dtype=torch.float64).to(device)
    out = memlab.embedding_bag(table, indices, weights, backend=backend)
    torch.testing.assert_close(out.cpu(), loop_reference(table, indices, weights), **TOL[torch.float64])


@pytest.mark.parametrize("bag", [1, 3])
def test_gradcheck(backend, device, bag):
    gen = torch.Generator().manual_seed(4)
    table = torch.randn(5, 3, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    indices = make_indices((2, bag), 5, torch.int64, gen).to(device)
    weights = torch.randn(2, bag, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t, w: memlab.embedding_bag(t, indices, w, backend=backend), (table, weights)
    )


def test_gradients_match_closed_form(backend, device):
    """∂/∂table[r] = Σ_{idx=r} w · g (duplicates accumulate);  ∂/∂w[n,j] = ⟨g[n], table[idx[n,j]]⟩."""
    gen = torch.Generator().manual_seed(5)
    table = torch.randn(7, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    indices = torch.tensor([[1, 1, 3], [3, 0, 1]])
    weights = torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    memlab.embedding_bag(table.to(device), indices.to(device), weights.to(device), backend=backend).backward(
        grad_out.to(device)
    )
    expected_table = torch.zeros(7, 4, dtype=torch.float64)
    expected_w = torch.zeros(2, 3, dtype=torch.float64)
    for n in range(2):
        for j in range(3):
            r = int(indices[n, j])
            expected_table[r] += weights[n, j].detach() * grad_out[n]
            expected_w[n, j] = grad_out[n] @ table[r].detach()
    torch.testing.assert_close(table.grad, expected_table, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(weights.grad, expected_w, atol=1e-12, rtol=1e-12)
    assert table.grad[[2, 4, 5, 6]].abs().sum() == 0  # rows never read get no gradient


def test_empty_bag_is_zero_and_keeps_graph(backend, device):
    table = torch.randn(4, 3, device=device, requires_grad=True)
    indices = torch.empty(2, 0, dtype=torch.long, device=device)
    out = memlab.embedding_bag(table, indices, torch.empty(2, 0, device=device), backend=backend)
    assert out.shape == (2, 3)
    assert torch.equal(out.cpu(), torch.zeros(2, 3))
    out.sum().backward()
    assert table.grad is not None and table.grad.abs().sum() == 0


def test_backends_agree(backends):
    gen = torch.Generator().manual_seed(6)
    table = torch.randn(20, 33, generator=gen)
    indices = torch.randint(0, 20, (4, 6), generator=gen)
    weights = torch.rand(4, 6, generator=gen)
    dev = lambda b: "cuda" if b == "triton" and torch.cuda.is_available() else "cpu"  # noqa: E731
    outs = [memlab.embedding_bag(table.to(dev(b)), indices.to(dev(b)), weights.to(dev(b)), backend=b).cpu()
            for b in backends]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], atol=1e-5, rtol=1e-5)


def test_auto_backend_on_cpu_is_torch(monkeypatch):
    monkeypatch.delenv("MEMLAB_BACKEND", raising=False)
    assert resolve_backend("auto", torch.zeros(1, 1)) == "torch"
    monkeypatch.setenv("MEMLAB_BACKEND", "torch")
    assert resolve_backend("auto", torch.zeros(1, 1)) == "torch"
