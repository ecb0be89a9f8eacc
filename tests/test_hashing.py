"""MemoryFormer's addressing equations: sign codes, bit order, and p(z) closed form vs the brute-force softmax."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from memlab import hashing


@pytest.mark.parametrize("temperature", [0.25, 1.0, 3.0])
@pytest.mark.parametrize("tau", list(range(1, 11)))
def test_closed_form_equals_bruteforce_softmax(tau, temperature):
    gen = torch.Generator().manual_seed(tau)
    z = torch.randn(64, tau, generator=gen, dtype=torch.float64) * 1.5
    closed = hashing.bucket_probability(z, temperature)
    brute = hashing.bucket_probability_bruteforce(z, temperature)
    assert closed.dtype == torch.float64 and closed.shape == (64,)
    assert (closed - brute).abs().max().item() <= 1e-12


def test_closed_form_equals_explicit_loop_softmax():
    """The brute force itself, written out with loops over every sign vector s ∈ {±1}^τ (no memlab helpers)."""
    gen = torch.Generator().manual_seed(0)
    tau, t = 4, 0.7
    for z in torch.randn(10, tau, generator=gen, dtype=torch.float64):
        logits = {}
        for bits in itertools.product((0, 1), repeat=tau):
            s = [2 * b - 1 for b in bits]
            logits[bits] = sum(float(z[i]) * s[i] for i in range(tau)) / t
        norm = sum(math.exp(v) for v in logits.values())
        own = tuple(int(float(z[i]) >= 0) for i in range(tau))
        expected = math.exp(logits[own]) / norm
        assert abs(hashing.bucket_probability(z, t).item() - expected) <= 1e-12
        assert abs(hashing.bucket_probability_bruteforce(z, t).item() - expected) <= 1e-12


def test_hashed_bucket_is_the_softmax_argmax():
    """The bucket z hashes to is the one whose sign vector agrees with z: the most probable bucket."""
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(50, 6, generator=gen, dtype=torch.float64)
    signs = hashing.bucket_sign_vectors(6)
    assert torch.equal((z @ signs.T).argmax(-1), hashing.sign_codes(z))


def test_sign_codes_bit_order_lsb_first():
    z = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
    assert hashing.sign_codes(z).tolist() == [1, 2, 4, 7, 0]


def test_sign_of_zero_is_plus():
    assert hashing.sign_codes(torch.zeros(1, 5)).tolist() == [31]
    assert hashing.sign_codes(torch.tensor([[0.0, -0.5]])).tolist() == [1]
    assert hashing.sign_codes(torch.tensor([[-0.0, 0.5]])).tolist() == [3]  # -0.0 >= 0 too


@pytest.mark.parametrize("tau", [1, 3, 8, 12])
def test_sign_codes_range_dtype_and_shape(tau):
    gen = torch.Generator().manual_seed(tau)
    z = torch.randn(4, 5, tau, generator=gen)
    codes = hashing.sign_codes(z)
    assert codes.shape == (4, 5) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 2**tau
    manual = sum(((z[..., i] >= 0).long() << i) for i in range(tau))
    assert torch.equal(codes, manual)


@pytest.mark.parametrize("tau", [1, 2, 5])
def test_bucket_sign_vectors_match_codes(tau):
    signs = hashing.bucket_sign_vectors(tau)
    assert signs.shape == (2**tau, tau)
    assert set(signs.unique().tolist()) == {-1.0, 1.0}
    # bucket b's sign vector hashes back to b
    assert hashing.sign_codes(signs).tolist() == list(range(2**tau))
    assert [tuple(int(v > 0) for v in row) for row in signs.tolist()] == hashing.all_codes(tau)


def test_whole_bucket_distribution_factorises():
    """softmax_b(⟨z, s_b⟩/t) = Π_i σ(2 s_b,i z_i / t) for every bucket b, and sums to 1; p(z) is its value at h(z)."""
    gen = torch.Generator().manual_seed(3)
    t, tau = 0.6, 5
    z = torch.randn(7, tau, generator=gen, dtype=torch.float64)
    signs = hashing.bucket_sign_vectors(tau)
    probs = torch.softmax(z @ signs.T / t, dim=-1)  # (7, 2^τ)
    factorised = torch.sigmoid(2 * z.unsqueeze(1) * signs / t).prod(-1)
    torch.testing.assert_close(probs, factorised, atol=1e-14, rtol=1e-12)
    torch.testing.assert_close(probs.sum(-1), torch.ones(7, dtype=torch.float64), atol=1e-14, rtol=0)
    at_code = probs.gather(-1, hashing.sign_codes(z).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(hashing.bucket_probability(z, t), at_code, atol=1e-14, rtol=1e-12)


def test_probability_limits():
    p0 = hashing.bucket_probability(torch.zeros(3, 7, dtype=torch.float64))
    torch.testing.assert_close(p0, torch.full((3,), 2.0**-7, dtype=torch.float64), atol=1e-16, rtol=1e-14)
    big = torch.full((1, 5), 50.0, dtype=torch.float64)
    assert abs(hashing.bucket_probability(big).item() - 1.0) <= 1e-12
    # higher temperature → flatter softmax → smaller weight of the own bucket
    z = torch.tensor([[0.5, -0.2, 0.9]], dtype=torch.float64)
    assert hashing.bucket_probability(z, 4.0) < hashing.bucket_probability(z, 1.0) < hashing.bucket_probability(z, 0.25)


def test_probability_is_invariant_to_signs():
    z = torch.tensor([[0.4, -1.1, 0.3]], dtype=torch.float64)
    flips = hashing.bucket_sign_vectors(3)
    p = hashing.bucket_probability(z * flips)
    assert torch.allclose(p, p[:1].expand_as(p), atol=0, rtol=0)


def test_probability_gradient_closed_form():
    """∂p/∂z_i = p · (2/t) · sign(z_i) · σ(−2|z_i|/t)."""
    t = 0.8
    z = torch.tensor([0.4, -1.1, 0.3, -0.2], dtype=torch.float64, requires_grad=True)
    p = hashing.bucket_probability(z, t)
    p.backward()
    zd = z.detach()
    expected = p.detach() * (2 / t) * zd.sign() * torch.sigmoid(-2 * zd.abs() / t)
    torch.testing.assert_close(z.grad, expected, atol=1e-14, rtol=1e-12)
    assert torch.autograd.gradcheck(lambda v: hashing.bucket_probability(v, t), (zd.clone().requires_grad_(),))


def test_l1_weight():
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    expected = z.abs().sum(-1) * hashing.bucket_probability_bruteforce(z, 2.0)
    torch.testing.assert_close(hashing.l1_bucket_weight(z, 2.0), expected, atol=1e-14, rtol=1e-12)


def test_suggest_taus_and_all_codes():
    assert hashing.suggest_taus(500) == [4, 5, 10]
    assert hashing.suggest_taus(512) == [4, 8, 16]
    assert hashing.suggest_taus(17) == []
    assert hashing.all_codes(2) == [(0, 0), (1, 0), (0, 1), (1, 1)]
