"""HashMemory (MemoryFormer Memory Layer) against a loop reference Σ_k p(z_k) T_k[h(z_k)], gradients, sizes."""
from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from memlab import HashMemory, hashing


def away_from_zero(shape, gen, margin=0.1):
    """Inputs with |x| > margin: the codes stay constant under gradcheck's perturbations."""
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    return x.sign() * (x.abs() + margin)


def loop_reference(layer: HashMemory, x: torch.Tensor) -> torch.Tensor:
    """y = Σ_k w(z_k) · T_k[h(z_k)] with plain Python loops in float64 (no memlab helpers but the layer's settings)."""
    tau, K, t = layer.tau, layer.num_tables, layer.temperature
    tables = layer.tables.detach().double().cpu().reshape(K, 2**tau, layer.out_features)
    flat = x.detach().double().cpu().reshape(-1, layer.in_features)
    out = torch.zeros(flat.shape[0], layer.out_features, dtype=torch.float64)
    for n in range(flat.shape[0]):
        for k in range(K):
            z = [float(v) for v in flat[n, k * tau:(k + 1) * tau]]
            code = sum(2**i for i, v in enumerate(z) if v >= 0)
            p = 1.0
            for v in z:
                p *= 1.0 / (1.0 + math.exp(-2.0 * abs(v) / t))
            w = p * sum(abs(v) for v in z) if layer.weighting == "l1" else p
            out[n] += w * tables[k, code]
        if layer.bias is not None:
            out[n] += layer.bias.detach().double().cpu()
    return out.reshape(*x.shape[:-1], layer.out_features)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("weighting", ["paper", "l1"])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
@pytest.mark.parametrize("in_features,out_features,tau", [(12, 5, 3), (16, 7, 4), (10, 1, 10), (8, 3, 1)])
def test_forward_matches_loop_reference(backend, device, in_features, out_features, tau, temperature, weighting, bias):
    layer = HashMemory(in_features, out_features, tau=tau, temperature=temperature, weighting=weighting,
                       bias=bias, backend=backend).double().to(device)
    gen = torch.Generator().manual_seed(in_features)
    x = torch.randn(2, 3, in_features, generator=gen, dtype=torch.float64)
    x[0, 0, 0] = 0.0  # sign(0) = +
    y = layer(x.to(device))
    assert y.shape == (2, 3, out_features)
    torch.testing.assert_close(y.cpu(), loop_reference(layer, x), atol=1e-12, rtol=1e-10)


def test_float32_forward_matches_reference(backend, device):
    layer = HashMemory(32, 16, tau=8, backend=backend).to(device)
    x = torch.randn(5, 32, device=device)
    torch.testing.assert_close(layer(x).double().cpu(), loop_reference(layer, x), atol=1e-6, rtol=1e-5)


def test_l1_weighting_is_norm_times_p():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 20, generator=gen, dtype=torch.float64)
    paper = HashMemory(20, 4, tau=5).double()
    l1 = HashMemory(20, 4, tau=5, weighting="l1").double()
    z = x.unflatten(-1, (4, 5))
    torch.testing.assert_close(l1.bucket_weights(x), z.abs().sum(-1) * paper.bucket_weights(x), atol=1e-14, rtol=1e-12)
    torch.testing.assert_close(paper.bucket_weights(x), hashing.bucket_probability_bruteforce(z), atol=1e-12, rtol=0)


def test_address_indices_and_codes():
    layer = HashMemory(12, 2, tau=3)
    x = torch.tensor([[1.0, 2.0, 3.0, -1.0, -2.0, -3.0, 1.0, -1.0, 1.0, 0.0, -1.0, -1.0]])
    assert layer.codes(x).tolist() == [[7, 0, 5, 1]]
    indices, weights = layer.address(x)
    assert indices.tolist() == [[7, 8 + 0, 16 + 5, 24 + 1]]
    assert weights.shape == (1, 4)
    assert layer.K == 4 and layer.tables.shape == (4 * 8, 2)


def test_table_gradient_is_sparse_and_closed_form(backend, device):
    """∂L/∂T_k[b] = p(z_k)·∂L/∂y only on the hashed row b; every other row gets exactly zero."""
    layer = HashMemory(12, 4, tau=3, backend=backend).double().to(device)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 12, generator=gen, dtype=torch.float64).to(device)
    grad_y = torch.randn(3, 4, generator=gen, dtype=torch.float64).to(device)
    layer(x).backward(grad_y)
    indices, weights = layer.address(x)
    expected = torch.zeros_like(layer.tables)
    for n in range(3):
        for k in range(4):
            expected[indices[n, k]] += weights[n, k].detach() * grad_y[n]
    torch.testing.assert_close(layer.tables.grad, expected, atol=1e-14, rtol=1e-12)
    hit = torch.zeros(layer.tables.shape[0], dtype=torch.bool, device=device)
    hit[indices.flatten()] = True
    assert layer.tables.grad[~hit].abs().sum() == 0
    assert (layer.tables.grad[hit].abs().sum(-1) > 0).all()
    assert int(hit.sum()) <= 3 * 4


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("weighting", ["paper", "l1"])
def test_gradcheck(backend, device, weighting, bias):
    layer = HashMemory(4, 2, tau=2, temperature=0.7, weighting=weighting, bias=bias, backend=backend).double().to(device)
    gen = torch.Generator().manual_seed(3)
    x = away_from_zero((2, 4), gen).to(device).requires_grad_()
    names = ["tables"] + (["bias"] if bias else [])
    params = tuple(getattr(layer, n).detach().clone().requires_grad_() for n in names)

    def f(x, *ps):
        return functional_call(layer, dict(zip(names, ps)), (x,))

    # fast_mode (random directional derivatives) keeps the Triton interpreter cheap; torch gets the full Jacobian
    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=backend == "triton")


def test_input_gradient_flows_only_through_p():
    """∂y/∂x_i = Σ over the row read by x_i's chunk of T[row]·∂w/∂x_i — the codes contribute nothing."""
    layer = HashMemory(4, 2, tau=2, temperature=1.0).double()
    x = torch.tensor([[0.5, -0.3, 1.2, -0.8]], dtype=torch.float64, requires_grad=True)
    layer(x)[0, 0].backward()
    indices, _ = layer.address(x)
    z = x.detach().reshape(2, 2)
    p = hashing.bucket_probability(z)
    expected = torch.empty(4, dtype=torch.float64)
    for k in range(2):
        for i in range(2):
            v = z[k, i]
            dp = p[k] * 2 * v.sign() * torch.sigmoid(-2 * v.abs())
            expected[2 * k + i] = dp * layer.tables[indices[0, k], 0].detach()
    torch.testing.assert_close(x.grad[0], expected, atol=1e-14, rtol=1e-12)


def test_bias_option():
    torch.manual_seed(0)
    plain = HashMemory(8, 3, tau=4)
    assert plain.bias is None and sum(p.numel() for p in plain.parameters()) == 2 * 16 * 3
    with_bias = HashMemory(8, 3, tau=4, bias=True)
    assert with_bias.bias.shape == (3,)
    with_bias.tables.data.copy_(plain.tables.data)
    with_bias.bias.data = torch.tensor([1.0, -2.0, 0.5])
    x = torch.randn(4, 8)
    torch.testing.assert_close(with_bias(x), plain(x) + torch.tensor([1.0, -2.0, 0.5]))


def test_init_statistics():
    torch.manual_seed(0)
    layer = HashMemory(64, 256, tau=8)
    assert abs(layer.tables.std().item() - 0.02) < 1e-3
    layer = HashMemory(64, 64, tau=4, bias=True)
    assert layer.bias.abs().max().item() < 0.01


@pytest.mark.parametrize("tau,in_features,mb", [(4, 512, 2.1), (8, 512, 16.8), (10, 510, 53.5)])
def test_memory_bytes_table3(tau, in_features, mb):
    """MemoryFormer Table 3 (fp16, out_features = 512): τ=4 K=128 → 2.1 MB; τ=8 K=64 → 16.8 MB; τ=10 K=51 → 53.5 MB."""
    with torch.device("meta"):  # sizes only: no 100 MB allocation
        layer = HashMemory(in_features, 512, tau=tau)
    assert layer.K == in_features // tau
    assert layer.memory_bytes(torch.float16) == layer.K * 2**tau * 512 * 2
    assert round(layer.memory_bytes(torch.float16) / 1e6, 1) == mb
    assert layer.memory_bytes() == 2 * layer.memory_bytes(torch.float16)


def test_flops_per_token():
    layer = HashMemory(512, 512, tau=8)
    assert layer.flops_per_token() == 64 * 512 + 512


def test_works_on_leading_dims_and_single_vector():
    layer = HashMemory(8, 3, tau=4)
    x = torch.randn(2, 3, 4, 8)
    y = layer(x)
    assert y.shape == (2, 3, 4, 3)
    torch.testing.assert_close(layer(x[1, 2, 3]), y[1, 2, 3])


def test_half_precision_tables_run(backend, device):
    layer = HashMemory(16, 8, tau=4, backend=backend).half().to(device)
    x = torch.randn(3, 16).half().to(device)
    y = layer(x)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.double().cpu(), loop_reference(layer, x.double()), atol=2e-3, rtol=1e-2)


def test_extra_repr_mentions_settings():
    text = repr(HashMemory(16, 8, tau=4, weighting="l1", bias=True))
    assert "tau=4" in text and "K=4" in text and "'l1'" in text and "bias=True" in text
