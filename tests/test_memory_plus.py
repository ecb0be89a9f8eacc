"""Memory+: W2(PKM(x) ⊙ silu(W1 x)), qk-norm option, values shared across layers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from memlab import MemoryPlus, ProductKeyMemory, SharedValues


@pytest.mark.parametrize("qk_norm", [True, False])
@pytest.mark.parametrize("v_dim", [None, 6])
def test_forward_is_swilu_around_pkm(backend, device, qk_norm, v_dim):
    torch.manual_seed(1)
    layer = MemoryPlus(8, n_keys=5, heads=2, topk=3, v_dim=v_dim, qk_norm=qk_norm, backend=backend)
    layer = layer.double().to(device)
    x = torch.randn(4, 2, 8, dtype=torch.float64, device=device)
    y_mem = layer.memory(x)
    assert y_mem.shape == (4, 2, layer.memory.v_dim)  # no output projection inside the memory
    w1, w2 = layer.gate_proj.weight, layer.out_proj.weight
    expected = (y_mem * F.silu(x @ w1.T)) @ w2.T
    y = layer(x)
    assert y.shape == (4, 2, 8)
    torch.testing.assert_close(y, expected, atol=1e-13, rtol=1e-12)
    # and the memory itself: the product-key lookup with softmax weights over the selected scores
    idx, w = layer.lookup(x)
    v = layer.memory.values.weight
    manual = (w.unsqueeze(-1) * v[idx]).sum((-3, -2))
    torch.testing.assert_close(y_mem, manual, atol=1e-13, rtol=1e-12)


def test_qk_norm_option():
    assert MemoryPlus(8, n_keys=4, topk=2).memory.query_norm == "qk"  # default on (the paper)
    assert MemoryPlus(8, n_keys=4, topk=2, qk_norm=False).memory.query_norm is None  # the released code
    assert "qk_norm=True" in repr(MemoryPlus(8, n_keys=4, topk=2))


def test_gradcheck_values_gates_and_input():
    torch.manual_seed(2)
    layer = MemoryPlus(4, n_keys=3, heads=1, topk=2, k_dim=2, qk_norm=False).double()
    x = torch.randn(2, 4, dtype=torch.float64)
    with torch.no_grad():
        s1, s2 = layer.memory.scores(x)
        full = (s1.unsqueeze(-1) + s2.unsqueeze(-2)).flatten(-2).topk(3, dim=-1).values
    assert (full[..., 1] - full[..., 2]).min() > 1e-3  # the top-2 selection is stable under 1e-6 perturbations
    names = ["memory.values.weight", "gate_proj.weight", "out_proj.weight", "memory.query.weight"]
    params = dict(layer.named_parameters())
    tensors = tuple(params[n].detach().clone().requires_grad_() for n in names)

    def f(x, *ps):
        return functional_call(layer, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(), *tensors))


def test_shared_values_across_two_layers():
    shared = SharedValues(25, 8)
    model = nn.Sequential(
        MemoryPlus(8, n_keys=5, heads=2, topk=2, values=shared),
        MemoryPlus(8, n_keys=5, heads=1, topk=3, values=shared),
    )
    params = list(model.parameters())
    assert sum(p is shared.weight for p in params) == 1
    assert sum(p.numel() for p in model.parameters()) == (
        25 * 8 + sum(p.numel() for n, p in model.named_parameters() if "values" not in n)
    )
    assert model[0].memory.keys is not model[1].memory.keys
    x = torch.randn(3, 8)
    grads = []
    for layer in model:
        shared.weight.grad = None
        layer(x).pow(2).sum().backward()
        grads.append(shared.weight.grad.clone())
        assert grads[-1].abs().sum() > 0
    shared.weight.grad = None
    (model[0](x).pow(2).sum() + model[1](x).pow(2).sum()).backward()
    torch.testing.assert_close(shared.weight.grad, grads[0] + grads[1])
    assert model[0].memory_bytes() == model[1].memory_bytes() == shared.memory_bytes()


def test_memory_plus_in_a_stack_reuses_values_by_reference():
    shared = SharedValues(16, 6)
    a = MemoryPlus(6, n_keys=4, topk=2, values=shared)
    b = ProductKeyMemory(6, n_keys=4, topk=2, values=shared)
    with torch.no_grad():
        shared.weight.zero_()
    x = torch.randn(2, 6)
    assert torch.equal(a(x), torch.zeros(2, 6)) and torch.equal(b(x), torch.zeros(2, 6))


def test_flops_per_token():
    layer = MemoryPlus(16, n_keys=8, heads=2, topk=4, k_dim=8)
    assert layer.flops_per_token() == layer.memory.flops_per_token() + 2 * 16 * 16 + 16
