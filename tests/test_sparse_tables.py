"""Row-sparse MemoryFormer tables (hash_read(sparse=True), HashMemory(sparse_grad=True)), lazy AdamW on them against a
reference written out step by step, the trainer's table_optimizer="lazy" (resume bit-exact), and the CPU fast paths
of the product-key layers (C top-k, cached keys, Memory+'s fused query and gate projection)."""
from __future__ import annotations

import math

import pytest
import torch

import memlab
from memlab import HashMemory, MemoryBlock, MemoryPlus, ProductKeyMemory, RowSparseAdam
from memlab.addressing.product_keys import product_topk
from memlab.lab import roofline
from memlab.reading.kernels import cpu

needs_c = pytest.mark.skipif(not cpu.available(), reason="memlab's C kernel could not be built here")
BACKENDS = ["torch", pytest.param("c", marks=needs_c)]


def dense(grad: torch.Tensor) -> torch.Tensor:
    return grad.to_dense() if grad.is_sparse else grad


# ------------------------------------------------------------------------------------------------ sparse gradients
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n, k, tau, d", [(1, 1, 3, 1), (7, 4, 3, 33), (300, 5, 2, 17), (2, 16, 8, 64)])
def test_sparse_table_gradient_equals_the_dense_one(backend, n, k, tau, d):
    """Few tokens (sort path), many tokens into a small table (counting sort, every row read, duplicates)."""
    g = torch.Generator().manual_seed(n + d)
    x, tables, gy = torch.randn(n, k * tau, generator=g), torch.randn(k << tau, d, generator=g), torch.randn(n, d, generator=g)
    got = {}
    for sparse in (False, True):
        xx, tt = x.clone().requires_grad_(), tables.clone().requires_grad_()
        (memlab.hash_read(xx, tt, tau=tau, backend=backend, sparse=sparse) * gy).sum().backward()
        got[sparse] = xx.grad, tt.grad
    assert got[True][1].is_sparse and not got[False][1].is_sparse
    torch.testing.assert_close(got[True][0], got[False][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dense(got[True][1]), got[False][1], rtol=1e-5, atol=1e-6)
    if backend == "c":  # each distinct row once, ascending: no sort or merge left for the optimizer
        rows = got[True][1]._indices()[0]
        assert rows.numel() == torch.unique(rows).numel() and bool((rows[1:] > rows[:-1]).all())


@needs_c
def test_c_backward_matches_torch_and_does_not_depend_on_the_thread_count():
    g = torch.Generator().manual_seed(3)
    x, tables, gy = torch.randn(37, 40, generator=g), torch.randn(8 << 5, 24, generator=g), torch.randn(37, 24, generator=g)
    ref = {}
    xx, tt = x.clone().requires_grad_(), tables.clone().requires_grad_()
    (memlab.hash_read(xx, tt, tau=5, backend="torch") * gy).sum().backward()
    _, rows, w = cpu.hash_forward(x, tables, None, 8, 5, 1.0, False, addresses=True)
    for sparse in (False, True):
        a = cpu.gather_backward(gy, tables, rows, w, True, True, threads=1, sparse=sparse)
        b = cpu.gather_backward(gy, tables, rows, w, True, True, threads=2, sparse=sparse)
        assert torch.equal(dense(a[0]), dense(b[0])) and torch.equal(a[1], b[1])
        torch.testing.assert_close(dense(a[0]), tt.grad, rtol=1e-5, atol=1e-6)
    grad_x = cpu.addressing_grad(x, a[1], 8, 5, 1.0, False)
    torch.testing.assert_close(grad_x, xx.grad, rtol=1e-5, atol=1e-6)


def test_memory_block_and_shared_hash_reads_give_sparse_gradients():
    torch.manual_seed(0)
    block = MemoryBlock(16, tau=4, expand_bits=1, sparse_grad=True)
    x = torch.randn(5, 16)
    block(x).square().sum().backward()
    assert block.ml1.tables.grad.is_sparse and block.ml2.tables.grad.is_sparse
    hm = HashMemory(16, 12, tau=4, sparse_grad=True)  # the attention's path: address once, read with given rows
    ref = HashMemory(16, 12, tau=4)
    ref.load_state_dict(hm.state_dict())
    for layer in (hm, ref):
        layer.read(*layer.address(x)).square().sum().backward()
    assert hm.tables.grad.is_sparse
    torch.testing.assert_close(hm.tables.grad.to_dense(), ref.tables.grad, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="sparse_grad"):
        HashMemory(8, 8, tau=4, sparse_grad="yes")


def test_triton_backend_refuses_a_sparse_gradient_and_names_the_fix():
    with pytest.raises(ValueError, match="backend='c'.*'torch'"):
        memlab.hash_read(torch.randn(2, 8), torch.randn(2 << 4, 3, requires_grad=True), tau=4, backend="triton",
                         sparse=True)


# ------------------------------------------------------------------------------------------------ lazy AdamW
def lazy_adamw_step_by_step(p, m, v, steps_done, grads, lr, b1, b2, eps, wd):
    """Lazy AdamW written out element by element in float64 (lists, no tensors): ``grads`` maps a row to its summed
    gradient this step. Only those rows move; the bias corrections use the table's step count."""
    t = steps_done + 1
    for r, g in grads.items():
        for j, gj in enumerate(g):
            p[r][j] *= 1 - lr * wd
            m[r][j] = b1 * m[r][j] + (1 - b1) * gj
            v[r][j] = b2 * v[r][j] + (1 - b2) * gj * gj
            p[r][j] -= lr / (1 - b1**t) * m[r][j] / (math.sqrt(v[r][j]) / math.sqrt(1 - b2**t) + eps)
    return t


@pytest.mark.parametrize("backend, in_place", [("torch", False), pytest.param("c", True, marks=needs_c),
                                               pytest.param("c", False, marks=needs_c)])
def test_lazy_adam_on_hash_tables_matches_the_written_out_reference(backend, in_place):
    hp = {"lr": 5e-2, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}
    torch.manual_seed(0)
    layer = HashMemory(6, 3, tau=3, sparse_grad=True, backend=backend)  # 2 tables × 8 rows
    opt = RowSparseAdam([layer.tables], in_place=in_place, **hp)
    p = layer.tables.detach().double().tolist()
    m = [[0.0] * 3 for _ in p]
    v = [[0.0] * 3 for _ in p]
    steps, start = 0, layer.tables.detach().clone()
    for step in range(4):
        x = torch.randn(1 + step, 6)  # one token first: most rows are first read at a later step
        (layer(x) * torch.randn(x.shape[0], 3)).sum().backward()
        grad = layer.tables.grad.coalesce()
        grads = {int(r): g.double().tolist() for r, g in zip(grad.indices()[0], grad.values())}
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps = lazy_adamw_step_by_step(p, m, v, steps, grads, hp["lr"], *hp["betas"], hp["eps"], hp["weight_decay"])
        torch.testing.assert_close(layer.tables.detach().double(), torch.tensor(p, dtype=torch.float64),
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(opt.state[layer.tables]["exp_avg_sq"].double(), torch.tensor(v, dtype=torch.float64), rtol=1e-5,
                                   atol=1e-9)
    read = torch.tensor([any(a > 0 for a in v[r]) for r in range(16)])  # rows some step read
    assert read.any() and not read.all()
    assert torch.equal(layer.tables.detach()[~read], start[~read])  # rows never read: bit-identical
    assert float(opt.state[layer.tables]["step"]) == 4


@needs_c
def test_in_place_step_survives_zero_gradients():
    """Coordinates whose gradients are 0 or ~1e-19 have v = 0 or a denormal v: the step must stay finite (fast-math's
    vectorised √v = v·rsqrt(v) is NaN there) and equal torch's fused AdamW on the gathered rows."""
    w0 = torch.randn(40, 64)
    grad_rows = torch.randn(9, 64)
    grad_rows[:, ::3] = 0.0
    grad_rows[:, 1::3] *= 1e-19  # v = (1 − β2)·g² is a denormal float
    rows = torch.tensor([0, 3, 4, 7, 11, 20, 21, 33, 39])
    got = {}
    for in_place in (True, False):
        p = torch.nn.Parameter(w0.clone())
        opt = RowSparseAdam([p], lr=1e-2, in_place=in_place)
        for _ in range(2):
            p.grad = torch.sparse_coo_tensor(rows[None], grad_rows, (40, 64), check_invariants=True)
            opt.step()
        got[in_place] = p.detach()
    assert torch.isfinite(got[True]).all()
    torch.testing.assert_close(got[True], got[False], rtol=1e-6, atol=1e-7)


def test_lazy_false_is_dense_adamw_on_a_sparse_gradient():
    w0 = torch.randn(10, 4)
    ours, theirs = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    a = RowSparseAdam([ours], lr=1e-2, weight_decay=0.1, lazy=False, fused=False)
    b = torch.optim.AdamW([theirs], lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        rows = torch.tensor([1, 7, 1])
        grad = torch.sparse_coo_tensor(rows[None], torch.randn(3, 4), (10, 4), check_invariants=True)
        ours.grad, theirs.grad = grad, grad.to_dense()
        a.step()
        b.step()
    assert torch.equal(ours, theirs)


# ------------------------------------------------------------------------------------------------ the trainer
def test_trainer_lazy_tables_resume_bit_exact(tmp_path):
    from memlab.lab import data as data_lib
    from memlab.lab.models import ModelConfig
    from memlab.lab.train import TrainConfig, build_run, make_optimizer, train

    text = tmp_path / "docs.txt"
    docs = data_lib.docstrings_from_source((data_lib.stdlib_dir() / "argparse.py").read_bytes(), "argparse")
    text.write_text("\n\n".join(d for _, d in docs))
    model = ModelConfig.from_dict(dict(model="memoryformer", d_model=16, n_layers=1, n_heads=2, seq_len=16, tau=4,
                                       expand_bits=1))
    base = dict(out_dir=str(tmp_path / "runs"), text=str(text), steps=4, batch_size=2, warmup_steps=1, eval_every=2,
                eval_batches=1, stats_every=0, ckpt_every=2, log_every=2, fact_entities=0, table_optimizer="lazy")
    run = build_run(model, TrainConfig.from_dict({**base, "name": "probe"}), verbose=False)
    opt = run.optimizer
    assert isinstance(opt, RowSparseAdam)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["tables"]["in_place"] and groups["tables"]["fused"] is None
    assert all(g["fused"] is False and not g["in_place"] for n, g in groups.items() if n != "tables")
    assert all(m.sparse_grad for m in run.model.modules() if isinstance(m, HashMemory))
    assert isinstance(make_optimizer(run.model, TrainConfig.from_dict({**base, "table_optimizer": "adamw"})),
                      torch.optim.AdamW)
    assert not any(m.sparse_grad for m in run.model.modules() if isinstance(m, HashMemory))
    straight = train(model, TrainConfig.from_dict({**base, "name": "straight"}), verbose=False)
    train(model, TrainConfig.from_dict({**base, "name": "split", "stop_after": 2}), verbose=False)
    resumed = train(model, TrainConfig.from_dict({**base, "name": "split"}), resume=True, verbose=False)
    assert [h["loss"] for h in straight["history"]] == [h["loss"] for h in resumed["history"]]
    assert all("grad_norm" in h for h in straight["history"])
    with pytest.raises(ValueError, match="table_optimizer"):
        TrainConfig.from_dict({"table_optimizer": "lazzy"})


def test_lazy_adam_study_runs_the_demo_model():
    from memlab.lab.demo import BASE_MODEL, BASE_TRAIN
    from memlab.lab.studies import STUDIES

    study = STUDIES["lazy-adam"]
    assert study.model == {**BASE_MODEL, "model": "memoryformer"} and study.train == BASE_TRAIN
    assert [v["table_optimizer"] for _, v in study.point_list()] == ["adamw", "lazy"] and study.seeds >= 3
    from memlab.lab.demo import demo_configs

    assert demo_configs()[1]["memoryformer"].table_optimizer == "lazy"  # the demo's choice, which the study backs


# ------------------------------------------------------------------------------------------------ product keys
@needs_c
@pytest.mark.parametrize("lead, n, k", [((1,), 5, 5), ((3, 4), 64, 8), ((2, 4), 512, 32), ((7,), 9, 1)])
def test_c_product_topk_is_the_exact_top_k(lead, n, k):
    g = torch.Generator().manual_seed(n)
    s1, s2 = torch.randn(*lead, n, generator=g), torch.randn(*lead, n, generator=g)
    want_scores, want_idx = product_topk(s1, s2, k)
    scores, idx = cpu.product_topk(s1, s2, k)
    assert torch.equal(idx, want_idx)
    torch.testing.assert_close(scores, want_scores, rtol=0, atol=1e-6)
    weights, _ = cpu.product_topk(s1, s2, k, softmax=True)
    torch.testing.assert_close(weights, torch.softmax(want_scores, -1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("query_norm", [None, "qk", "layer"])
def test_pkm_fast_path_equals_the_reference_path(query_norm):
    torch.manual_seed(0)
    pkm = ProductKeyMemory(32, n_keys=12, heads=2, topk=5, query_norm=query_norm)
    x = torch.randn(3, 4, 32, requires_grad=True)
    s1, s2 = pkm.scores(x)
    top, idx = product_topk(s1, s2, 5)
    ref = pkm.read(idx, torch.softmax(top, -1))
    (ref * ref).sum().backward()
    want = {n: p.grad.clone() for n, p in pkm.named_parameters()}
    want_x, x.grad = x.grad.clone(), None
    pkm.zero_grad(set_to_none=True)
    out = pkm(x)  # training: indices from the C top-k, scores gathered in torch, gradients as through scores()
    (out * out).sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, want_x, rtol=1e-4, atol=1e-6)
    for name, p in pkm.named_parameters():
        torch.testing.assert_close(p.grad, want[name], rtol=1e-4, atol=1e-6)
    with torch.inference_mode():
        torch.testing.assert_close(pkm(x.detach()), ref.detach(), rtol=1e-5, atol=1e-6)


def test_cached_keys_and_gate_weights_follow_parameter_changes():
    torch.manual_seed(0)
    mp = MemoryPlus(32, n_keys=8, heads=2, topk=3)
    x = torch.randn(5, 32)
    with torch.no_grad():
        first = mp(x)
        torch.testing.assert_close(first, mp.swilu(x, mp.memory(x)), rtol=1e-5, atol=1e-6)
        for p in (mp.memory.keys, mp.gate_proj.weight, mp.memory.query.weight):  # in-place, as an optimizer step
            p.mul_(1.5)
            torch.testing.assert_close(mp(x), mp.swilu(x, mp.memory(x)), rtol=1e-5, atol=1e-6)
        other = MemoryPlus(32, n_keys=8, heads=2, topk=3)
        mp.load_state_dict(other.state_dict())  # copy_ into the same storage: a new version
        torch.testing.assert_close(mp(x), other(x), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(mp(x), first)


# ------------------------------------------------------------------------------------------------ the roofline model
def test_bytes_model_counts_what_each_layer_reads():
    d = 64
    lin = torch.nn.Linear(d, d, bias=False)
    assert roofline.step_bytes(lin, 1) == {"weights": d * d * 4, "activations": 2 * d * 4}
    hm = HashMemory(d, d, tau=8)  # K = 8 tables: 1 token reads 8 rows of d
    assert roofline.step_bytes(hm, 1)["rows"] == pytest.approx(8 * d * 4)
    assert roofline.step_bytes(hm, 10**6)["rows"] == pytest.approx(hm.tables.numel() * 4)  # every row once
    assert roofline.hash_to_dense_bytes(8, 10**6, d) == pytest.approx(2**8 / 8)
    assert roofline.hash_to_dense_bytes(8, 8, d) < 1 < roofline.hash_to_dense_bytes(8, 9, d)  # crossover near τ
    pkm = ProductKeyMemory(d, n_keys=16, heads=2, topk=4)
    parts = roofline.step_bytes(pkm, 1)
    assert parts["query projection"] == d * 2 * 32 * 4 and parts["half-keys"] == 2 * 16 * 32 * 4
    assert parts["rows"] == pytest.approx(2 * 4 * d * 4)
    assert roofline.step_bytes(MemoryPlus(d, n_keys=16, heads=2, topk=4), 1)["gate projections"] == 2 * d * d * 4
    assert roofline.expected_distinct(100, 3, 1) == pytest.approx(3)
    n = math.isqrt(roofline.pkm_values_for_doubling(n_keys=512))
    keys = 4 * n * 512
    assert 2 * (1024 * 4 * 512 + 4 * 32 * 1024 + 2048 + 4 * 512 * 512) == pytest.approx(
        1024 * 4 * 512 + 4 * 32 * 1024 + 2048 + keys, rel=1e-3)
