"""MemoryBlock: ML2(Norm(ML1(x))), expanding bits, Table 5 sizes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from memlab import HashMemory, MemoryBlock


@pytest.mark.parametrize("expand_bits,mb", [(0, 33.6), (1, 52.4), (2, 88.1), (3, 157.3)])
def test_memory_bytes_table5(expand_bits, mb):
    """MemoryFormer Table 5 (d=512, τ=8, K=64, fp16): tables 256×(512+64e) and 2^(8+e)×512 per chunk."""
    with torch.device("meta"):  # sizes only: e=3 would allocate ~370 MB in fp32
        block = MemoryBlock(512, tau=8, expand_bits=expand_bits)
    assert block.K == 64
    assert block.hidden_features == (8 + expand_bits) * 64
    assert block.ml1.tables.shape == (64 * 256, 512 + 64 * expand_bits)
    assert block.ml2.tables.shape == (64 * 2 ** (8 + expand_bits), 512)
    assert block.ml2.tau == 8 + expand_bits and block.ml2.K == 64
    assert round(block.memory_bytes(torch.float16) / 1e6, 1) == mb


@pytest.mark.parametrize("activation", [None, "gelu"])
@pytest.mark.parametrize("d_model,tau,expand_bits", [(8, 4, 0), (12, 3, 2), (6, 2, 1)])
def test_forward_is_ml2_norm_ml1(backend, device, d_model, tau, expand_bits, activation):
    block = MemoryBlock(d_model, tau=tau, expand_bits=expand_bits, activation=activation, backend=backend)
    block = block.double().to(device)
    x = torch.randn(2, 5, d_model, dtype=torch.float64, device=device)
    h = F.layer_norm(block.ml1(x), (block.hidden_features,), block.norm.weight, block.norm.bias)
    if activation == "gelu":
        h = F.gelu(h)
    expected = block.ml2(h)
    y = block(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, expected, atol=1e-12, rtol=1e-12)


def test_layers_are_hash_memories_with_expanded_bits():
    block = MemoryBlock(16, tau=4, expand_bits=2, weighting="l1", temperature=0.5)
    assert isinstance(block.ml1, HashMemory) and isinstance(block.ml2, HashMemory)
    assert (block.ml1.in_features, block.ml1.out_features, block.ml1.tau) == (16, 24, 4)
    assert (block.ml2.in_features, block.ml2.out_features, block.ml2.tau) == (24, 16, 6)
    assert block.ml1.weighting == block.ml2.weighting == "l1"
    assert block.ml1.temperature == block.ml2.temperature == 0.5


def test_default_expand_bits_is_two():
    assert MemoryBlock(16, tau=4).expand_bits == 2


def test_all_parameters_get_gradients():
    block = MemoryBlock(8, tau=4, expand_bits=1)
    x = torch.randn(3, 8)
    block(x).pow(2).sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_gradcheck_inputs_and_tables():
    """LayerNorm output feeds ML2's hashing, so only check gradients w.r.t. the two tables (codes fixed by x)."""
    block = MemoryBlock(4, tau=2, expand_bits=1).double()
    x = torch.randn(2, 4, dtype=torch.float64)
    t1 = block.ml1.tables.detach().clone().requires_grad_()
    t2 = block.ml2.tables.detach().clone().requires_grad_()

    def f(a, b):
        return torch.func.functional_call(block, {"ml1.tables": a, "ml2.tables": b}, (x,))

    # ML1's tables move ML2's input, but perturbations of 1e-6 keep ML2's codes unless a hidden unit sits at ~0
    h = block.norm(block.ml1(x))
    assert h.abs().min() > 1e-3
    assert torch.autograd.gradcheck(f, (t1, t2))


def test_flops_and_repr():
    block = MemoryBlock(16, tau=4, expand_bits=2)
    assert block.flops_per_token() == block.ml1.flops_per_token() + 5 * 24 + block.ml2.flops_per_token()
    assert "expand_bits=2" in repr(block)
