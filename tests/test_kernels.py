"""memlab's kernels against torch references: the Triton EmbeddingBag (forward, both backward strategies), the fused
CPU HashMemory paths (C kernel and torch Function), over odd shapes, dtypes, empty bags and duplicate indices.

Triton runs under the interpreter without CUDA (tests/conftest.py sets TRITON_INTERPRET=1; set here too in case this
module runs alone). Each interpreted program costs milliseconds, so sizes stay small.
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import memlab  # noqa: E402
from memlab import HashMemory  # noqa: E402
from memlab.reading.kernels import cpu, triton_available  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton not installed")
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float64: 1e-12}


def _bag_case(rows, dim, n_bags, bag, dtype, index_dtype=torch.int64, hot=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(rows, dim, generator=g).to(dtype)
    hi = min(rows, 2) if hot else rows  # hot: every bag hits the same one or two rows
    indices = torch.randint(0, hi, (n_bags, bag), generator=g).to(index_dtype)
    weights = torch.randn(n_bags, bag, generator=g).to(dtype)
    return table.to(DEVICE), indices.to(DEVICE), weights.to(DEVICE)


def _reference(table, indices, weights):
    """float64 reference: out[n] = Σ_j w[n, j] table[idx[n, j]]."""
    t, w = table.double().cpu(), weights.double().cpu()
    return (t[indices.long().cpu()] * w.unsqueeze(-1)).sum(-2)


def _grads(table, indices, weights, backward, backend="triton", grad_seed=1):
    table = table.detach().clone().requires_grad_()
    weights = weights.detach().clone().requires_grad_()
    out = memlab.embedding_bag(table, indices, weights, backend=backend, backward=backward)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed)).to(out.dtype).to(out.device)
    out.backward(g)
    return out, table.grad, weights.grad, g


def _reference_grads(table, indices, weights, g):
    t = table.detach().double().cpu().requires_grad_()
    w = weights.detach().double().cpu().requires_grad_()
    (_reference_t(t, indices, w) * g.double().cpu()).sum().backward()
    return t.grad, w.grad


def _reference_t(t, indices, w):
    return (t[indices.long().cpu()] * w.unsqueeze(-1)).sum(-2)


# --- Triton EmbeddingBag: forward ---------------------------------------------------------------------------------

@needs_triton
@pytest.mark.parametrize("dim", [1, 7, 123, 256])
@pytest.mark.parametrize("bag", [0, 1, 5])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_forward_shapes_fp32(dim, bag, index_dtype):
    table, idx, w = _bag_case(11, dim, 3, bag, torch.float32, index_dtype)
    out = memlab.embedding_bag(table, idx, w, backend="triton")
    torch.testing.assert_close(out.double().cpu(), _reference(table, idx, w), atol=1e-5, rtol=1e-5)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_forward_dtypes(dtype):
    table, idx, w = _bag_case(13, 123, 4, 6, dtype)
    out = memlab.embedding_bag(table, idx, w, backend="triton")
    assert out.dtype == dtype
    tol = TOL[dtype]
    torch.testing.assert_close(out.double().cpu(), _reference(table, idx, w), atol=tol * 10, rtol=tol)


# --- Triton EmbeddingBag: both backward strategies --------------------------------------------------------------

@needs_triton
@pytest.mark.parametrize("backward", ["atomic", "reverse"])
@pytest.mark.parametrize("dim,bag,hot", [(1, 3, False), (7, 1, False), (123, 5, True), (256, 4, False)])
def test_backward_strategies_match_reference(backward, dim, bag, hot):
    table, idx, w = _bag_case(9, dim, 6, bag, torch.float32, hot=hot)
    _, gt, gw, g = _grads(table, idx, w, backward)
    rt, rw = _reference_grads(table, idx, w, g)
    torch.testing.assert_close(gt.double().cpu(), rt, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(gw.double().cpu(), rw, atol=1e-4, rtol=1e-5)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_backward_strategies_agree_half(dtype, index_dtype):
    table, idx, w = _bag_case(10, 37, 5, 4, dtype, index_dtype, hot=True)
    _, ta, wa, g = _grads(table, idx, w, "atomic")
    _, tr, wr, _ = _grads(table, idx, w, "reverse")
    rt, rw = _reference_grads(table, idx, w, g)
    tol = TOL[dtype]
    for got in (ta, tr):
        torch.testing.assert_close(got.double().cpu(), rt, atol=tol * 20, rtol=tol * 4)
    for got in (wa, wr):
        torch.testing.assert_close(got.double().cpu(), rw, atol=tol * 40, rtol=tol * 4)
    torch.testing.assert_close(ta.double(), tr.double(), atol=tol * 20, rtol=tol * 4)


@needs_triton
def test_reverse_backward_hot_row_duplicates_and_empty():
    """Many tokens on one row (the MemoryFormer regime) and an empty bag set."""
    table, _, _ = _bag_case(5, 33, 1, 1, torch.float32)
    idx = torch.full((40, 3), 2, dtype=torch.int64, device=DEVICE)
    idx[::4, 1] = 4
    w = torch.randn(40, 3, device=DEVICE)
    _, gt, gw, g = _grads(table, idx, w, "reverse")
    rt, rw = _reference_grads(table, idx, w, g)
    torch.testing.assert_close(gt.double().cpu(), rt, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(gw.double().cpu(), rw, atol=1e-4, rtol=1e-5)
    assert torch.all(gt[[0, 1, 3]] == 0)  # untouched rows: exact zeros
    empty = torch.empty(4, 0, dtype=torch.int64, device=DEVICE)
    _, gt0, gw0, _ = _grads(table, empty, torch.empty(4, 0, device=DEVICE), "reverse")
    assert torch.all(gt0 == 0) and gw0.shape == (4, 0)


@needs_triton
def test_reverse_backward_is_deterministic():
    table, idx, w = _bag_case(6, 64, 12, 5, torch.float32, hot=True)
    first = _grads(table, idx, w, "reverse")
    second = _grads(table, idx, w, "reverse")
    assert torch.equal(first[1], second[1]) and torch.equal(first[2], second[2])


@needs_triton
@pytest.mark.parametrize("backward", ["atomic", "reverse"])
def test_gradcheck_fp64(backward):
    table, idx, w = _bag_case(4, 3, 3, 2, torch.float64, hot=True)

    def f(t, ww):
        return memlab.embedding_bag(t, idx, ww, backend="triton", backward=backward)

    assert torch.autograd.gradcheck(f, (table.requires_grad_(), w.requires_grad_()), eps=1e-6, atol=1e-8)


def test_backward_strategy_selection(monkeypatch):
    from memlab.reading.kernels.triton_bag import DEFAULT_BACKWARD, resolve_backward

    assert resolve_backward(None) == DEFAULT_BACKWARD
    monkeypatch.setenv("MEMLAB_BAG_BACKWARD", "reverse")
    assert resolve_backward(None) == "reverse"
    assert resolve_backward("atomic") == "atomic"
    with pytest.raises(ValueError, match="backward"):
        resolve_backward("magic")


def test_reverse_indices_csr():
    from memlab.reading.kernels.triton_bag import reverse_indices

    idx = torch.tensor([[3, 1], [3, 3], [0, 1]])
    row_ids, start, end, perm = reverse_indices(idx, 5)
    assert row_ids.tolist() == [3, 1, 0]  # by hit count, most first; row 2 and 4 untouched
    flat = idx.reshape(-1)
    for r, s, e in zip(row_ids.tolist(), start.tolist(), end.tolist()):
        positions = perm[s:e].tolist()
        assert positions == sorted(positions) and all(flat[p] == r for p in positions)


# --- HashMemory: fused paths == unfused composition --------------------------------------------------------------

@pytest.mark.parametrize("weighting", ["paper", "l1"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("n", [1, 3, 37])
def test_fused_hash_forward_and_grads_match_unfused(weighting, bias, n):
    torch.manual_seed(0)
    hm = HashMemory(42, 13, tau=7, weighting=weighting, bias=bias, temperature=0.7, backend="torch").double()
    x = torch.randn(2, n, 42, dtype=torch.float64, requires_grad=True)
    y, yr = hm(x), hm.read(*hm.address(x))
    torch.testing.assert_close(y, yr, atol=1e-12, rtol=1e-12)
    g = torch.randn_like(y)
    params = [x, hm.tables] + ([hm.bias] if bias else [])
    got = torch.autograd.grad((y * g).sum(), params)
    want = torch.autograd.grad((yr * g).sum(), params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_fused_hash_gradcheck_fp64():
    torch.manual_seed(1)
    hm = HashMemory(12, 5, tau=4, temperature=1.3, backend="torch").double()
    x = torch.randn(3, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(hm, (x,))
    hm_l1 = HashMemory(12, 5, tau=4, weighting="l1", backend="torch").double()
    assert torch.autograd.gradcheck(hm_l1, (x,))


@pytest.mark.parametrize("n", [0, 1, 4, 5, 300])
@pytest.mark.parametrize("weighting", ["paper", "l1"])
def test_inference_paths_fp32(n, weighting):
    """no_grad fp32: the C kernel and the pure-torch route both equal the unfused composition."""
    torch.manual_seed(2)
    hm = HashMemory(64, 70, tau=8, weighting=weighting, bias=True, backend="torch")
    x = torch.randn(n, 64)
    with torch.no_grad():
        want = hm.read(*hm.address(x))
        torch.testing.assert_close(hm(x), want, atol=2e-6, rtol=1e-5)
        for backend in ("torch", "auto"):
            got = memlab.hash_read(x, hm.tables, tau=hm.tau, weighting=weighting, bias=hm.bias, backend=backend)
            torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)


@pytest.mark.skipif(not cpu.available(), reason="no C compiler: the pure-torch path is used")
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n,d_in,d_out,tau", [(1, 40, 9, 5), (5, 40, 9, 5), (33, 40, 9, 5), (3, 96, 100, 4),
                                              (64, 96, 37, 3), (7, 24, 1030, 8)])
def test_c_kernel_address_and_forward(threads, n, d_in, d_out, tau):
    """Every work split (tokens or column slices, full groups of 8 tables and a remainder) gives the reference rows,
    weights and output; d_out=1030 leaves a column tail that is not a multiple of 16."""
    torch.manual_seed(3)
    hm = HashMemory(d_in, d_out, tau=tau, temperature=0.5, bias=True, backend="torch")  # address: the equations
    x = torch.randn(n, d_in)
    x[0, :tau] = 0.0  # sign(0) counts as +
    bias = hm.bias.detach()
    out, rows, w = cpu.hash_forward(x, hm.tables.detach(), bias, hm.num_tables, hm.tau, hm.temperature, False,
                                    threads=threads, addresses=True)
    want_rows, want_w = hm.address(x)
    assert torch.equal(rows, want_rows)
    torch.testing.assert_close(w, want_w.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out, hm.read(want_rows, want_w).detach(), atol=2e-6, rtol=1e-5)


@pytest.mark.skipif(not cpu.available(), reason="no C compiler: the pure-torch path is used")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("weighting", ["paper", "l1"])
@pytest.mark.parametrize("shape,tau", [((0, 40), 5), ((1, 40), 5), ((3, 11, 40), 5), ((64, 96), 3), ((5, 80), 10),
                                       ((2, 7, 130), 13)])
def test_c_address_matches_the_equations(shape, tau, weighting, threads, monkeypatch):
    """HashMemory.address on the C path (fp32 CPU, backend "auto") gives the equations' rows and weights (backend
    "torch"), keeps the leading dims, and its closed-form dx equals autograd through the equations. Exact zeros hash
    to the + side on both paths."""
    monkeypatch.setattr(cpu, "MIN_PARALLEL_FLOATS", 0)
    torch.manual_seed(5)
    d_in = shape[-1]
    c_path = HashMemory(d_in, 6, tau=tau, weighting=weighting, temperature=0.7)
    equations = HashMemory(d_in, 6, tau=tau, weighting=weighting, temperature=0.7, backend="torch")
    x = torch.randn(*shape)
    if x.numel():
        x.view(-1, d_in)[0, :tau] = 0.0
    torch.set_num_threads(threads)
    try:
        rows, w = c_path.address(x)
        xg = x.clone().requires_grad_()
        if x.numel():
            xg.data.view(-1, d_in)[0, :tau] = 0.5  # the gradient check away from z = 0 (where the two differ by design)
        g = torch.randn(*shape[:-1], d_in // tau)
        dx = torch.autograd.grad(c_path.address(xg)[1], xg, g)[0] if x.numel() else None
    finally:
        torch.set_num_threads(1)
    want_rows, want_w = equations.address(x)
    assert rows.shape == want_rows.shape == (*shape[:-1], d_in // tau) and rows.dtype == torch.int64
    assert torch.equal(rows, want_rows)
    torch.testing.assert_close(w, want_w, atol=1e-6, rtol=1e-5)
    if dx is not None:
        want_dx = torch.autograd.grad(equations.address(xg)[1], xg, g)[0]
        torch.testing.assert_close(dx, want_dx, atol=1e-6, rtol=1e-4)


@pytest.mark.skipif(not cpu.available(), reason="no C compiler: the pure-torch path is used")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("weighting", ["paper", "l1"])
@pytest.mark.parametrize("n,d_in,d_out,tau", [(1, 40, 9, 5), (33, 40, 9, 5), (64, 96, 37, 3), (7, 24, 1030, 8)])
def test_c_kernel_gradients_match_unfused(n, d_in, d_out, tau, weighting, threads, monkeypatch):
    """Training through the C kernel (hash_read(backend="c"), i.e. cpu.HashReadC): dx, dtables, dbias equal autograd through the unfused
    read(address(x)), with duplicate rows (33–64 tokens on 2^τ ≤ 32 rows per table) and a column tail."""
    monkeypatch.setattr(cpu, "MIN_PARALLEL_FLOATS", 0)  # these small cases would otherwise run on one thread
    torch.manual_seed(4)
    hm = HashMemory(d_in, d_out, tau=tau, weighting=weighting, temperature=0.7, bias=True, backend="torch")
    x = torch.randn(n, d_in, requires_grad=True)
    g = torch.randn(n, d_out)
    torch.set_num_threads(threads)
    try:
        y = memlab.hash_read(x, hm.tables, tau=hm.tau, temperature=hm.temperature, weighting=weighting,
                             bias=hm.bias, backend="c")
        got = torch.autograd.grad(y, [x, hm.tables, hm.bias], g)
    finally:
        torch.set_num_threads(1)
    want_y = hm.read(*hm.address(x))
    want = torch.autograd.grad(want_y, [x, hm.tables, hm.bias], g)
    torch.testing.assert_close(y, want_y, atol=2e-6, rtol=1e-5)
    for name, a, b in zip(("dx", "dtables", "dbias"), got, want):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.skipif(not cpu.available(), reason="no C compiler: the pure-torch path is used")
def test_c_kernel_gradients_only_where_needed():
    """Frozen tables or an input without grad: HashMemory.forward still trains what requires grad, through the C path."""
    torch.manual_seed(5)
    hm = HashMemory(16, 6, tau=4, bias=True)
    hm.tables.requires_grad_(False)
    x = torch.randn(5, 16, requires_grad=True)
    hm(x).sum().backward()
    assert x.grad is not None and hm.tables.grad is None and hm.bias.grad is not None
    hm.tables.requires_grad_(True)
    x2 = torch.randn(5, 16)
    hm(x2).square().sum().backward()
    want = torch.autograd.grad(hm.read(*hm.address(x2)).square().sum(), hm.tables)[0]
    torch.testing.assert_close(hm.tables.grad, want, atol=1e-6, rtol=1e-5)


def test_fused_forward_keeps_input_shape_and_dtype_bf16_input():
    hm = HashMemory(16, 6, tau=4)
    x = torch.randn(2, 3, 16).to(torch.bfloat16)
    y = hm(x)
    assert y.shape == (2, 3, 6) and y.dtype == torch.float32
    # p is computed in fp32 here, in bf16 by the unfused composition: bf16-level agreement
    torch.testing.assert_close(y, hm.read(*hm.address(x)), atol=2e-3, rtol=2e-2)
    torch.testing.assert_close(y, hm(x.float()), atol=1e-6, rtol=1e-5)
    xr = x.clone().requires_grad_()
    hm(xr).sum().backward()
    assert xr.grad.dtype == torch.bfloat16


# --- Fused Triton HashMemory (memlab.reading.kernels.triton_hash) == unfused read(address(x)) ---------------------------

def _hash_case(d_in, d_out, tau, weighting, dtype, n=4, seed=0):
    torch.manual_seed(seed)
    hm = HashMemory(d_in, d_out, tau=tau, weighting=weighting, bias=True, temperature=0.7, backend="triton")
    hm = hm.to(DEVICE).to(dtype)
    x = torch.randn(n, d_in, device=DEVICE).to(dtype).requires_grad_()
    return hm, x


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("d_in,d_out,tau", [(12, 7, 3), (24, 123, 8)])
@pytest.mark.parametrize("weighting", ["paper", "l1"])
def test_fused_triton_hash_matches_unfused(weighting, d_in, d_out, tau, dtype):
    from memlab.reading.kernels import triton_hash

    hm, x = _hash_case(d_in, d_out, tau, weighting, dtype)
    y = triton_hash.hash_read_triton(x, hm.tables, hm.bias, hm.num_tables, hm.tau, hm.temperature, weighting == "l1")
    assert torch.equal(y, hm(x))  # HashMemory.forward routes backend="triton" to the fused kernel
    yr = hm.read(*hm.address(x))  # unfused: addressing in torch, then the Triton EmbeddingBag
    assert y.dtype == yr.dtype == dtype
    tol = TOL[dtype]
    torch.testing.assert_close(y, yr, atol=tol * 10, rtol=tol)
    g = torch.randn(y.shape, device=DEVICE).to(dtype)
    params = [x, hm.tables, hm.bias]
    got = torch.autograd.grad((y.float() * g.float()).sum(), params)
    want = torch.autograd.grad((yr.float() * g.float()).sum(), params)
    for name, a, b in zip(("dx", "dtables", "dbias"), got, want):
        assert a.dtype == b.dtype, name
        torch.testing.assert_close(a.float(), b.float(), atol=tol * 20, rtol=tol * 4, msg=name)


@needs_triton
@pytest.mark.parametrize("backward", ["atomic", "reverse"])
def test_fused_triton_hash_backward_strategies_and_shapes(backward):
    """Both table-gradient strategies; leading dims; no bias; sign(0) = + in the codes; zero tokens."""
    torch.manual_seed(4)
    hm = HashMemory(15, 9, tau=5, temperature=1.3, backend="triton").to(DEVICE)
    x = torch.randn(2, 3, 15, device=DEVICE)
    x[0, 0, :5] = 0.0  # all-zero chunk: code 2^5 - 1, as sign_codes
    x.requires_grad_()
    y = memlab.hash_read(x, hm.tables, tau=5, temperature=1.3, backend="triton", backward=backward)
    yr = hm.read(*hm.address(x))
    assert y.shape == (2, 3, 9)
    torch.testing.assert_close(y, yr, atol=1e-6, rtol=1e-5)
    y.sum().backward()
    gx, gt = x.grad.clone(), hm.tables.grad.clone()
    x.grad = hm.tables.grad = None
    yr.sum().backward()
    torch.testing.assert_close(gt, hm.tables.grad, atol=1e-5, rtol=1e-5)
    # at z_i = 0 the closed form uses sign(0) = +; autograd through |z| gives 0 there: compare elsewhere
    nz = x.detach() != 0
    torch.testing.assert_close(gx[nz], x.grad[nz], atol=1e-5, rtol=1e-5)
    empty = memlab.hash_read(torch.randn(0, 15, device=DEVICE), hm.tables, tau=5, backend="triton")
    assert empty.shape == (0, 9)


@needs_triton
def test_fused_triton_hash_gradcheck_fp64():
    torch.manual_seed(5)
    hm = HashMemory(6, 3, tau=3, weighting="l1", bias=True, backend="triton").double().to(DEVICE)
    x = torch.randn(2, 6, dtype=torch.float64, device=DEVICE, requires_grad=True)
    def fused(xx):
        return memlab.hash_read(xx, hm.tables, tau=3, weighting="l1", bias=hm.bias, backend="triton")

    assert torch.autograd.gradcheck(fused, (x,), eps=1e-6, atol=1e-7)


@needs_triton
@pytest.mark.parametrize("dim", [7, 123])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_teaching_kernel_matches_reference(dim, dtype):
    from memlab.reading.kernels.teaching import embedding_bag_one_row

    table, idx, w = _bag_case(9, dim, 3, 4, dtype, hot=True)
    out = embedding_bag_one_row(table, idx, w, block_d=64)  # dim 123: two column tiles, masked tail
    tol = TOL[dtype]
    torch.testing.assert_close(out.double().cpu(), _reference(table, idx, w), atol=tol * 10, rtol=tol)


@pytest.mark.skipif(not cpu.available(), reason="no C compiler: the pure-torch path is used")
def test_c_address_refuses_a_double_backward():
    """The C path's closed-form backward is not itself differentiable: create_graph=True gets one clear error (the
    torch path, backend="torch", differentiates twice)."""
    torch.manual_seed(6)
    x = torch.randn(3, 16, requires_grad=True)
    w = HashMemory(16, 4, tau=4).address(x)[1]
    with pytest.raises(RuntimeError, match="not twice differentiable.*backend='torch'"):
        torch.autograd.grad(w.sum(), x, create_graph=True)
    w_torch = HashMemory(16, 4, tau=4, backend="torch").address(x)[1]
    (g,) = torch.autograd.grad(w_torch.sum(), x, create_graph=True)
    assert g.requires_grad
