"""Row-sparse value gradients and the lazy AdamW step (memlab.lab.row_sparse), and kernels/bench_sparse.py --quick."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

import memlab
from memlab import ProductKeyMemory, RowSparseAdam, SharedValues, clip_sparse_grad_norm_, split_sparse_parameters
from memlab.reading.kernels import triton_available

ROOT = Path(__file__).resolve().parents[1]


def sparse_grad(rows: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    """An uncoalesced row-sparse gradient (duplicate rows allowed), as F.embedding_bag(sparse=True) gives."""
    return torch.sparse_coo_tensor(rows[None], values, shape, check_invariants=True)


# ------------------------------------------------------------------------------------------------ the gradient
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows, dim, lead, bag", [(1, 1, (1,), 1), (7, 3, (5,), 4), (123, 17, (3, 3), 13), (9, 64, (2,), 30)])
def test_sparse_grad_equals_dense_grad(rows, dim, lead, bag, dtype):
    table = torch.randn(rows, dim, dtype=dtype)
    indices = torch.randint(0, max(1, rows // 3), (*lead, bag))  # a third of the rows: many duplicates
    weights = torch.rand(*lead, bag, dtype=dtype)
    grad_out = torch.randn(*lead, dim, dtype=dtype)
    results = {}
    for sparse in (False, True):
        t, w = table.clone().requires_grad_(), weights.clone().requires_grad_()
        out = memlab.embedding_bag(t, indices, w, backend="torch", sparse=sparse)
        out.backward(grad_out)
        results[sparse] = out, t.grad, w.grad
    (out_d, gt_d, gw_d), (out_s, gt_s, gw_s) = results[False], results[True]
    assert gt_s.is_sparse and not gt_d.is_sparse
    assert gt_s.sparse_dim() == 1 and gt_s._nnz() == indices.numel()  # one row per read, before coalescing
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(out_s, out_d, rtol=0, atol=0)
    torch.testing.assert_close(gt_s.to_dense(), gt_d, **tol)
    torch.testing.assert_close(gw_s, gw_d, rtol=0, atol=0)


def test_empty_bags_give_an_empty_sparse_grad():
    table = torch.randn(6, 4, requires_grad=True)
    out = memlab.embedding_bag(table, torch.empty(3, 0, dtype=torch.long), torch.empty(3, 0), backend="torch",
                               sparse=True)
    assert out.shape == (3, 4) and not out.any()
    out.sum().backward()
    assert table.grad.is_sparse and table.grad._nnz() == 0


def test_shared_values_layers_accumulate_the_dense_gradient():
    """Two layers reading one sparse pool: the accumulated (concatenated) sparse grad equals the dense one."""
    grads = {}
    for sparse in (False, True):
        torch.manual_seed(1)
        values = SharedValues(64, 8, sparse_grad=sparse)
        layers = torch.nn.ModuleList(ProductKeyMemory(8, n_keys=8, heads=2, topk=3, values=values) for _ in range(2))
        x = torch.randn(5, 8)
        (layers[0](x) * layers[1](x).tanh()).sum().backward()
        grads[sparse] = {n: p.grad for n, p in layers.named_parameters()}
    assert grads[True]["0.values.weight"].is_sparse
    for name, g in grads[False].items():
        got = grads[True][name]
        torch.testing.assert_close(got.to_dense() if got.is_sparse else got, g, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ the step
def lazy_adamw_reference(p, m, v, rows, g, t, lr, betas, eps, wd):
    """Float64 lazy AdamW written out (torch.optim.AdamW's formula) on the rows of a coalesced gradient."""
    b1, b2 = betas
    p, m, v = p.clone(), m.clone(), v.clone()
    p[rows] *= 1 - lr * wd
    m[rows] = b1 * m[rows] + (1 - b1) * g
    v[rows] = b2 * v[rows] + (1 - b2) * g * g
    denom = v[rows].sqrt() / math.sqrt(1 - b2**t) + eps
    p[rows] -= lr / (1 - b1**t) * m[rows] / denom
    return p, m, v


@pytest.mark.parametrize("fused", [False, True])
def test_step_matches_reference_and_leaves_untouched_rows_bit_identical(fused):
    n_rows, dim, hp = 37, 5, {"lr": 1e-2, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}
    param = torch.nn.Parameter(torch.randn(n_rows, dim, dtype=torch.float64))
    opt = RowSparseAdam([param], fused=fused, **hp)
    ref = param.detach().clone(), torch.zeros(n_rows, dim, dtype=torch.float64), torch.zeros(n_rows, dim, dtype=torch.float64)
    for t in range(1, 5):
        rows = torch.randint(0, n_rows, (12,))  # duplicates; a different subset each step
        param.grad = sparse_grad(rows, torch.randn(12, dim, dtype=torch.float64), (n_rows, dim))
        coalesced = param.grad.coalesce()
        touched = torch.zeros(n_rows, dtype=torch.bool)
        touched[rows] = True
        before = [x.clone() for x in (param.detach(), *(opt.state[param].get(k, ref[1]) for k in ("exp_avg", "exp_avg_sq")))]
        opt.step()
        ref = lazy_adamw_reference(*ref, coalesced.indices()[0], coalesced.values(), t, hp["lr"], hp["betas"],
                                   hp["eps"], hp["weight_decay"])
        state = opt.state[param]
        for got, want, old in zip((param.detach(), state["exp_avg"], state["exp_avg_sq"]), ref, before):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
            assert torch.equal(got[~touched], old[~touched])  # not decayed, not moved: lazy
        assert float(state["step"]) == t


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("layout", ["row-sparse", "dense"])
def test_all_rows_touched_is_adamw_bit_for_bit(layout, fused):
    """When every row is read (or the gradient is dense) lazy AdamW is torch.optim.AdamW, to the bit."""
    hp = {"lr": 1e-2, "betas": (0.9, 0.95), "weight_decay": 0.1, "fused": fused}
    w0 = torch.randn(29, 33)
    ours, theirs = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    opt_ours, opt_theirs = RowSparseAdam([ours], **hp), torch.optim.AdamW([theirs], **hp)
    for _ in range(4):
        g = torch.randn(29, 33)
        perm = torch.randperm(29)
        ours.grad = sparse_grad(perm, g[perm], g.shape) if layout == "row-sparse" else g.clone()
        theirs.grad = g
        opt_ours.step()
        opt_theirs.step()
        assert torch.equal(ours, theirs)
        assert torch.equal(opt_ours.state[ours]["exp_avg_sq"], opt_theirs.state[theirs]["exp_avg_sq"])


def test_matches_torch_sparse_adam():
    """weight_decay=0: RowSparseAdam = torch.optim.SparseAdam up to ε placement (ε tiny here, so float rounding)."""
    hp = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-16}
    w0 = torch.randn(50, 7, dtype=torch.float64)
    ours, theirs = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    opt_ours, opt_theirs = RowSparseAdam([ours], **hp), torch.optim.SparseAdam([theirs], **hp)
    for _ in range(5):
        rows = torch.randint(0, 50, (20,))
        g = sparse_grad(rows, torch.randn(20, 7, dtype=torch.float64), (50, 7))
        ours.grad, theirs.grad = g, g.clone()
        opt_ours.step()
        opt_theirs.step()
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(opt_ours.state[ours]["exp_avg"], opt_theirs.state[theirs]["exp_avg"])


def test_tiny_pkm_trains_like_sparse_adam():
    """Five steps of a tiny PKM: values under RowSparseAdam vs torch.optim.SparseAdam, the rest under the same Adam."""
    finals = {}
    for opt_class in (RowSparseAdam, torch.optim.SparseAdam):
        torch.manual_seed(2)
        pkm = ProductKeyMemory(8, n_keys=6, heads=2, topk=3, values=SharedValues(36, 8, sparse_grad=True)).double()
        dense, sparse = split_sparse_parameters(pkm)
        opts = [torch.optim.Adam(dense, lr=1e-2), opt_class(sparse, lr=1e-2, eps=1e-16)]
        data = torch.Generator().manual_seed(3)
        for _ in range(5):
            x = torch.randn(6, 8, generator=data, dtype=torch.float64)
            loss = (pkm(x) - x.flip(-1)).pow(2).mean()
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss.backward()
            for o in opts:
                o.step()
        finals[opt_class] = {n: p.detach().clone() for n, p in pkm.named_parameters()}
    for name, value in finals[RowSparseAdam].items():
        torch.testing.assert_close(value, finals[torch.optim.SparseAdam][name], rtol=1e-9, atol=1e-11)


# ------------------------------------------------------------------------------------------------ clipping, groups
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_sparse_grad_norm_matches_torch_on_the_dense_equivalent(max_norm):
    a, b = torch.nn.Parameter(torch.randn(10, 3)), torch.nn.Parameter(torch.randn(4))
    a.grad = sparse_grad(torch.tensor([1, 1, 7, 1]), torch.randn(4, 3), (10, 3))  # uncoalesced duplicates
    b.grad = torch.randn(4)
    a2, b2 = torch.nn.Parameter(a.detach().clone()), torch.nn.Parameter(b.detach().clone())
    a2.grad, b2.grad = a.grad.to_dense(), b.grad.clone()
    total = clip_sparse_grad_norm_([a, b], max_norm)
    want = torch.nn.utils.clip_grad_norm_([a2, b2], max_norm)
    torch.testing.assert_close(total, want)
    assert a.grad.is_sparse
    torch.testing.assert_close(a.grad.to_dense(), a2.grad)
    torch.testing.assert_close(b.grad, b2.grad)
    assert float(clip_sparse_grad_norm_([torch.nn.Parameter(torch.ones(2))], 1.0)) == 0.0  # no grads


def test_split_sparse_parameters_finds_the_shared_pool_once():
    values = SharedValues(36, 8, sparse_grad=True)
    model = torch.nn.ModuleList(ProductKeyMemory(8, n_keys=6, heads=2, topk=3, values=values) for _ in range(2))
    dense, sparse = split_sparse_parameters(model)
    assert sparse == [values.weight]
    assert len(dense) + 1 == len(list(model.parameters())) and all(p is not values.weight for p in dense)
    values.sparse_grad = False
    assert split_sparse_parameters(model)[1] == []
    assert "sparse_grad=True" in repr(SharedValues(4, 2, sparse_grad=True))


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.skipif(not triton_available(), reason="triton not installed: the triton backend raises its own error")
def test_sparse_with_triton_backend_names_the_fix():
    table = torch.randn(8, 4, requires_grad=True)
    with pytest.raises(ValueError, match="backend='torch'"):
        memlab.embedding_bag(table, torch.zeros(2, 3, dtype=torch.long), backend="triton", sparse=True)
    pkm = ProductKeyMemory(8, n_keys=4, heads=1, topk=2, backend="triton", values=SharedValues(16, 8, sparse_grad=True))
    with pytest.raises(ValueError, match="sparse_grad=False"):
        pkm(torch.randn(2, 8))


def test_auto_backend_with_sparse_uses_torch(monkeypatch):
    monkeypatch.setenv("MEMLAB_BACKEND", "triton")
    table = torch.randn(8, 4, requires_grad=True)
    memlab.embedding_bag(table, torch.tensor([[1, 1, 5]]), sparse=True).sum().backward()
    assert table.grad.is_sparse


def test_misuse_errors():
    p = torch.nn.Parameter(torch.randn(4, 3))
    p.grad = torch.randn(4, 3).to_sparse()  # sparse_dim=2: not row-sparse
    with pytest.raises(ValueError, match="sparse_dim=2.*to_dense"):
        RowSparseAdam([p]).step()
    with pytest.raises(ValueError, match="dense parameters"):
        RowSparseAdam([torch.randn(4, 3).to_sparse().requires_grad_()])
    with pytest.raises(ValueError, match="lr"):
        RowSparseAdam([p], lr=-1.0)
    with pytest.raises(TypeError, match="sparse_grad"):
        SharedValues(4, 2, sparse_grad=1)
    q = torch.nn.Parameter(torch.randn(4, 3))
    q.grad = sparse_grad(torch.tensor([0, 2]), torch.randn(2, 3), (4, 3))
    with pytest.raises(RuntimeError, match="sparse"):  # torch's dense AdamW refuses a sparse grad (not silently)
        torch.optim.AdamW([q]).step()


# ------------------------------------------------------------------------------------------------ the benchmark
def test_bench_sparse_quick_writes_json(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_sparse", ROOT / "kernels" / "bench_sparse.py")
    bench_sparse = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_sparse)
    assert bench_sparse.main(["--quick", "--out", str(tmp_path)]) == 0
    files = list(tmp_path.glob("sparse-*.json"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    data = json.loads(files[0].read_text())
    for key in ("device", "device_type", "date", "quick", "versions", "threads", "table", "timing", "results", "log"):
        assert key in data, key
    assert data["quick"] is True and data["table"]["rows"] == data["table"]["n_keys"] ** 2
    row = data["results"][0]
    for key in ("tokens", "reads", "rows_touched", "fraction_touched", "bytes_written", "time_s", "speedup_total_vs"):
        assert key in row, key
    assert 0 < row["rows_touched"] <= row["reads"]
    assert row["bytes_written"]["row-sparse"] < row["bytes_written"]["dense"]
    assert set(row["time_s"]) == (
        {f"{phase}: {m}" for phase in ("step", "total") for m in bench_sparse.METHODS}
        | {"backward: dense grad", "backward: row-sparse grad"}
    )
    assert row["speedup_total_vs"]["dense AdamW"]["dense AdamW"] == 1.0
