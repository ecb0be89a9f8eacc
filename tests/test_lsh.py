"""memlab.lsh: random-hyperplane LSH helpers used by notebook 01."""
import math

import pytest
import torch

from memlab import hashing, lsh


def test_pairs_are_at_the_requested_angle():
    gen = torch.Generator().manual_seed(1)
    for theta in (0.0, 0.3, math.pi / 2, 2.5, math.pi):
        u, v = lsh.pairs_at_angle(theta, dim=7, n_pairs=50, generator=gen)
        assert torch.allclose(u.norm(dim=-1), torch.ones(50, dtype=torch.float64))
        assert torch.allclose(v.norm(dim=-1), torch.ones(50, dtype=torch.float64))
        cos = (u * v).sum(-1).clamp(-1, 1)
        assert torch.allclose(cos, torch.full_like(cos, math.cos(theta)), atol=1e-12)


def test_collision_probability_endpoints_and_bits():
    assert lsh.collision_probability(0.0) == 1.0
    assert lsh.collision_probability(math.pi) == 0.0
    assert lsh.collision_probability(math.pi / 2) == pytest.approx(0.5)
    assert lsh.collision_probability(math.pi / 2, bits=3) == pytest.approx(0.125)
    t = torch.tensor([0.0, math.pi / 2])
    assert torch.allclose(lsh.collision_probability(t, bits=2), torch.tensor([1.0, 0.25]))


def test_hyperplane_bits_shape_and_sign_convention():
    planes = torch.eye(3, dtype=torch.float64)
    x = torch.tensor([[1.0, -2.0, 0.0]], dtype=torch.float64)
    bits = lsh.hyperplane_bits(x, planes)
    assert bits.tolist() == [[True, False, True]]  # 0 counts as +, as in memlab.hashing
    with pytest.raises(ValueError, match="dim"):
        lsh.hyperplane_bits(torch.zeros(2, 4), planes)


def test_measured_collision_matches_theory():
    curve = lsh.collision_curve(torch.linspace(0, math.pi, 7, dtype=torch.float64), dim=16, n_pairs=400, n_planes=32, seed=0)
    assert (curve["abs_error"] <= 5 * curve["std_error"] + 1e-12).all()
    assert curve["measured"][0] == 1.0 and curve["measured"][-1] == 0.0


def test_nearest_vertex_equals_sign_codes():
    torch.manual_seed(0)
    z = torch.randn(500, 5, dtype=torch.float64)
    assert torch.equal(lsh.nearest_vertex_codes(z), hashing.sign_codes(z))


def test_bad_arguments():
    with pytest.raises(ValueError):
        lsh.random_hyperplanes(0, 3)
    with pytest.raises(ValueError):
        lsh.pairs_at_angle(0.5, dim=1, n_pairs=3)
