"""ProductKeyMemory: forward vs a brute-force reference, gradients, query norms, shared values."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from memlab import ProductKeyMemory, SharedValues


def reference_forward(pkm: ProductKeyMemory, x: torch.Tensor) -> torch.Tensor:
    """Σ_heads Σ_{top-k of all n² keys} softmax(score) · V[i·n + j], with every key materialised, float64."""
    n = pkm.n_keys
    q, keys = pkm.queries(x).double().cpu(), pkm.half_keys().double().cpu()
    scale = (pkm.k_dim // 2) ** -0.5 if pkm.query_norm == "qk" else 1.0
    values = pkm.values.weight.double().cpu()
    out = torch.zeros(*x.shape[:-1], pkm.v_dim, dtype=torch.float64)
    for h in range(pkm.heads):
        full_keys = torch.cat([keys[h, 0].repeat_interleave(n, 0), keys[h, 1].repeat(n, 1)], dim=-1)
        full = q[..., h, :, :].flatten(-2) @ full_keys.T * scale
        top, idx = full.topk(pkm.topk, dim=-1)
        out = out + (torch.softmax(top, -1).unsqueeze(-1) * values[idx]).sum(-2)
    if pkm.out_proj is not None:
        out = out @ pkm.out_proj.weight.double().cpu().T
    return out


def min_topk_margin(pkm: ProductKeyMemory, x: torch.Tensor) -> float:
    """Smallest gap between the k-th and (k+1)-th best score over all queries and heads (selection stability)."""
    with torch.no_grad():
        s1, s2 = pkm.scores(x)
    full = (s1.unsqueeze(-1) + s2.unsqueeze(-2)).flatten(-2)
    top = full.topk(pkm.topk + 1, dim=-1).values
    return float((top[..., -2] - top[..., -1]).min())


@pytest.mark.parametrize("query_norm", [None, "layer", "qk"])
@pytest.mark.parametrize("d_model,n_keys,heads,topk,v_dim", [(8, 4, 1, 2, None), (12, 6, 3, 4, None), (10, 5, 2, 5, 7)])
def test_forward_matches_reference(backend, device, d_model, n_keys, heads, topk, v_dim, query_norm):
    torch.manual_seed(d_model)
    pkm = ProductKeyMemory(d_model, n_keys=n_keys, heads=heads, topk=topk, v_dim=v_dim, query_norm=query_norm,
                           backend=backend).double().to(device)
    x = torch.randn(3, 2, d_model, dtype=torch.float64, device=device)
    y = pkm(x)
    assert y.shape == (3, 2, d_model)
    assert (pkm.out_proj is not None) == (v_dim is not None and v_dim != d_model)
    torch.testing.assert_close(y.cpu(), reference_forward(pkm, x), atol=1e-12, rtol=1e-10)


def test_read_is_one_bag_over_heads_and_topk():
    pkm = ProductKeyMemory(8, n_keys=4, heads=2, topk=3)
    idx = torch.tensor([[[0, 5, 15], [5, 5, 1]]])
    w = torch.tensor([[[0.5, 0.25, 0.25], [1.0, 2.0, -1.0]]])
    v = pkm.values.weight
    expected = 0.5 * v[0] + 3.25 * v[5] + 0.25 * v[15] - v[1]
    torch.testing.assert_close(pkm.read(idx, w)[0], expected)


def test_gradcheck_with_stable_selection(backend, device):
    torch.manual_seed(3)
    pkm = ProductKeyMemory(4, n_keys=3, heads=2, topk=2, k_dim=2, backend=backend).double().to(device)
    x = torch.randn(2, 4, dtype=torch.float64, device=device)
    assert min_topk_margin(pkm, x) > 1e-3  # gradcheck's 1e-6 perturbations cannot change the selected keys
    names = ["values.weight", "keys", "query.weight"]
    params = dict(pkm.named_parameters())
    tensors = tuple(params[n].detach().clone().requires_grad_() for n in names)

    def f(x, *ps):
        return functional_call(pkm, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(), *tensors), fast_mode=backend == "triton")


def test_value_gradient_is_sparse():
    pkm = ProductKeyMemory(8, n_keys=8, heads=2, topk=3)
    x = torch.randn(4, 8)
    indices, _ = pkm.lookup(x)
    pkm(x).sum().backward()
    grad = pkm.values.weight.grad
    hit = torch.zeros(64, dtype=torch.bool)
    hit[indices.flatten()] = True
    assert grad[~hit].abs().sum() == 0
    assert (grad[hit].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("query_norm", [None, "batch", "layer", "qk"])
def test_query_norms_run_and_train(query_norm):
    pkm = ProductKeyMemory(16, n_keys=8, heads=2, topk=4, query_norm=query_norm)
    x = torch.randn(5, 3, 16)
    y = pkm(x)
    assert y.shape == (5, 3, 16) and torch.isfinite(y).all()
    y.sum().backward()
    assert pkm.query.weight.grad is not None and pkm.keys.grad is not None
    pkm.eval()
    assert torch.isfinite(pkm(x)).all()


def test_qk_norm_normalises_queries_and_keys():
    pkm = ProductKeyMemory(16, n_keys=8, heads=2, topk=4, k_dim=8, query_norm="qk")
    with torch.no_grad():
        pkm.keys.mul_(37.0)
        q = pkm.queries(torch.randn(3, 16) * 100)
    rms = lambda t: t.pow(2).mean(-1).sqrt()  # noqa: E731
    torch.testing.assert_close(rms(pkm.half_keys()), torch.ones(2, 2, 8), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rms(q), torch.ones(3, 2, 2), atol=1e-4, rtol=1e-4)


def test_defaults_and_sizes():
    pkm = ProductKeyMemory(64, n_keys=32)
    assert pkm.heads == 4 and pkm.topk == 32 and pkm.k_dim == 32 and pkm.v_dim == 64
    assert pkm.n_values == 1024 and pkm.values.weight.shape == (1024, 64)
    assert pkm.keys.shape == (4, 2, 32, 16)
    assert pkm.out_proj is None
    assert pkm.memory_bytes() == 1024 * 64 * 4 and pkm.memory_bytes(torch.float16) == 1024 * 64 * 2
    assert ProductKeyMemory(10, n_keys=4, topk=2).k_dim == 4  # ½ d_model rounded to even
    assert "n_keys=32" in repr(pkm)


def test_init_statistics():
    torch.manual_seed(0)
    pkm = ProductKeyMemory(64, n_keys=32, k_dim=32)
    assert pkm.keys.abs().max() <= 32**-0.5
    assert abs(pkm.values.weight.std().item() - 64**-0.5) < 0.005


def test_flops_per_token():
    pkm = ProductKeyMemory(16, n_keys=8, heads=2, topk=4, k_dim=8, v_dim=12)
    assert pkm.flops_per_token() == 16 * 2 * 8 + 2 * 8 * 8 + 2 * 16 + 2 * 4 * 12 + 12 * 16


def test_shared_values_one_parameter_two_layers():
    shared = SharedValues(16, 8)
    parent = nn.ModuleDict({
        "a": ProductKeyMemory(8, n_keys=4, heads=1, topk=2, values=shared),
        "b": ProductKeyMemory(8, n_keys=4, heads=2, topk=3, values=shared),
    })
    assert parent["a"].values.weight is parent["b"].values.weight
    ids = [id(p) for p in parent.parameters()]
    assert ids.count(id(shared.weight)) == 1
    # each layer keeps its own keys
    assert parent["a"].keys is not parent["b"].keys
    x = torch.randn(3, 8)
    g = {}
    for name in ("a", "b"):
        shared.weight.grad = None
        parent[name](x).sum().backward()
        g[name] = shared.weight.grad.clone()
        assert g[name].abs().sum() > 0
    shared.weight.grad = None
    (parent["a"](x).sum() + parent["b"](x).sum()).backward()
    torch.testing.assert_close(shared.weight.grad, g["a"] + g["b"])
    assert shared.memory_bytes() == 16 * 8 * 4 and "n_values=16" in repr(shared)
