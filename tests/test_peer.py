"""PEER (He 2024, "Mixture of A Million Experts" §2): forward and gradients against a brute-force float64 reference that
scores all n² experts, one weighted bag per read, clear errors, sizes, and the ``peer`` model variant."""
from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import memlab
import memlab.layers.shared_values as values_module  # where a layer's read calls embedding_bag (SharedValues.read)
from memlab import PEER
from memlab.lab.data import stdlib_dir
from memlab.lab.models import ModelConfig, build_model, usage_statistics
from memlab.lab.train import TrainConfig, train

ACT = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}


def reference_forward(peer: PEER, x: torch.Tensor) -> torch.Tensor:
    """y = Σ_heads Σ_{i ∈ top-k of ALL n² keys} softmax(score)_i · σ(u_iᵀ x) · v_i, every key materialised, float64.

    Differentiable in the layer's parameters (when they are float64), so gradients can be compared too.
    """
    n, act = peer.n_keys, ACT[peer.activation]
    q, keys = peer.queries(x), peer.half_keys()
    scale = (peer.k_dim // 2) ** -0.5 if peer.query_norm == "qk" else 1.0
    u, v = peer.down.weight, peer.values.weight
    out = torch.zeros(*x.shape[:-1], peer.d_model, dtype=torch.float64)
    for h in range(peer.heads):
        full_keys = torch.cat([keys[h, 0].repeat_interleave(n, 0), keys[h, 1].repeat(n, 1)], dim=-1)  # (n², k_dim)
        scores = q[..., h, :, :].flatten(-2) @ full_keys.T * scale                                     # (..., n²)
        top, idx = scores.topk(peer.topk, dim=-1)
        g = torch.softmax(top, dim=-1)
        hidden = act((u[idx] * x.unsqueeze(-2)).sum(-1))                                               # σ(u_iᵀ x)
        out = out + ((g * hidden).unsqueeze(-1) * v[idx]).sum(-2)
    return out


def min_topk_margin(peer: PEER, x: torch.Tensor) -> float:
    """Smallest gap between the k-th and (k+1)-th best of all n² scores (selection is stable when it is not tiny)."""
    with torch.no_grad():
        s1, s2 = peer.scores(x)
    full = (s1.unsqueeze(-1) + s2.unsqueeze(-2)).flatten(-2)
    if peer.topk == full.shape[-1]:
        return float("inf")
    top = full.topk(peer.topk + 1, dim=-1).values
    return float((top[..., -2] - top[..., -1]).min())


# ------------------------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("query_norm", [None, "layer", "qk"])
@pytest.mark.parametrize(
    "d_model,n_keys,heads,topk,k_dim,lead",
    [(8, 4, 1, 2, None, (5,)), (7, 3, 2, 3, 2, (2, 3)), (12, 5, 3, 5, 6, (1,)), (1, 2, 1, 1, None, ()),
     (9, 6, 4, 4, 10, (4, 1))],
)
def test_forward_matches_bruteforce_reference(backend, device, d_model, n_keys, heads, topk, k_dim, lead, query_norm):
    torch.manual_seed(d_model + n_keys)
    peer = PEER(d_model, n_keys=n_keys, heads=heads, topk=topk, k_dim=k_dim, query_norm=query_norm,
                backend=backend).double().to(device)
    x = torch.randn(*lead, d_model, dtype=torch.float64, device=device)
    y = peer(x)
    assert y.shape == (*lead, d_model) and y.dtype == torch.float64
    peer, x = peer.cpu(), x.cpu()
    with torch.no_grad():
        torch.testing.assert_close(y.cpu(), reference_forward(peer, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ["gelu", "relu", "silu"])
def test_activations_match_reference(activation):
    torch.manual_seed(1)
    peer = PEER(10, n_keys=6, heads=2, topk=3, activation=activation).double()
    x = torch.randn(4, 10, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(peer(x), reference_forward(peer, x), rtol=1e-10, atol=1e-12)


def test_reading_is_one_weighted_bag_over_the_up_rows(monkeypatch):
    peer = PEER(8, n_keys=4, heads=3, topk=2)
    calls = []
    original = values_module.embedding_bag

    def spy(table, indices, weights, **kw):
        calls.append((table, indices.shape, weights.shape))
        return original(table, indices, weights, **kw)

    monkeypatch.setattr(values_module, "embedding_bag", spy)
    x = torch.randn(2, 5, 8)
    peer(x)
    assert len(calls) == 1
    table, idx_shape, w_shape = calls[0]
    assert table is peer.values.weight and idx_shape == w_shape == (2, 5, 3 * 2)  # heads × top-k in one bag
    indices, g = peer.lookup(x)
    a = peer.expert_activations(x, indices)
    torch.testing.assert_close(a, F.gelu((peer.down.weight[indices] * x[..., None, None, :]).sum(-1)))


# ------------------------------------------------------------------------------------------------ gradients
def test_gradients_match_reference_for_keys_u_v_query_and_input():
    torch.manual_seed(4)
    peer = PEER(6, n_keys=5, heads=2, topk=3).double()
    x = torch.randn(7, 6, dtype=torch.float64, requires_grad=True)
    assert min_topk_margin(peer, x) > 1e-6
    names = ["keys", "down.weight", "values.weight", "query.weight"]
    params = dict(peer.named_parameters())
    got = torch.autograd.grad((peer(x) ** 2).sum(), [params[n] for n in names] + [x])
    want = torch.autograd.grad((reference_forward(peer, x) ** 2).sum(), [params[n] for n in names] + [x])
    for name, g, w in zip(names + ["x"], got, want):
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12, msg=name)


def test_gradcheck_with_stable_selection(backend, device):
    torch.manual_seed(3)
    peer = PEER(4, n_keys=3, heads=2, topk=2, k_dim=2, backend=backend).double().to(device)
    x = torch.randn(2, 4, dtype=torch.float64, device=device)
    assert min_topk_margin(peer, x) > 1e-3  # gradcheck's 1e-6 perturbations cannot change the selected experts
    names = ["values.weight", "down.weight", "keys", "query.weight"]
    params = dict(peer.named_parameters())
    tensors = tuple(params[n].detach().clone().requires_grad_() for n in names)

    def f(x, *ps):
        return functional_call(peer, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(), *tensors), fast_mode=backend == "triton")


def test_only_retrieved_experts_get_gradients():
    peer = PEER(8, n_keys=8, heads=2, topk=3)
    x = torch.randn(4, 8)
    indices, _ = peer.lookup(x)
    peer(x).sum().backward()
    hit = torch.zeros(64, dtype=torch.bool)
    hit[indices.flatten()] = True
    for table in (peer.values.weight, peer.down.weight):
        assert table.grad[~hit].abs().sum() == 0
        assert (table.grad[hit].abs().sum(-1) > 0).all()


def test_row_sparse_gradients_equal_dense_ones():
    torch.manual_seed(5)
    peer = PEER(8, n_keys=4, heads=2, topk=3)
    x = torch.randn(3, 8)
    peer(x).square().sum().backward()
    dense = peer.values.weight.grad.clone(), peer.down.weight.grad.clone()
    peer.zero_grad(set_to_none=True)
    peer.values.sparse_grad = peer.down.sparse_grad = True
    peer(x).square().sum().backward()
    assert peer.values.weight.grad.is_sparse and peer.down.weight.grad.is_sparse
    torch.testing.assert_close(peer.values.weight.grad.to_dense(), dense[0])
    torch.testing.assert_close(peer.down.weight.grad.to_dense(), dense[1])


# ------------------------------------------------------------------------------------------------ errors and sizes
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(activation="tanh"), ValueError, "activation='tanh' is not one of ('gelu', 'relu', 'silu')"),
        (dict(topk=9), ValueError, "topk=9 is larger than n_keys=8"),
        (dict(k_dim=5), ValueError, "k_dim=5 must be even"),
        (dict(heads=0), ValueError, "heads must be a positive integer"),
        (dict(n_keys=2.5), ValueError, "n_keys must be a positive integer"),
        (dict(query_norm="rms"), ValueError, "query_norm='rms' is not one of"),
        (dict(max_memory_bytes=1000), ValueError, "pass max_memory_bytes=None"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, message):
    with pytest.raises(error) as err:
        PEER(**{"d_model": 16, "n_keys": 8, "heads": 2, "topk": 4, **kwargs})
    assert message in str(err.value)


def test_bad_inputs_raise_clear_errors():
    peer = PEER(16, n_keys=8, heads=2, topk=4)
    with pytest.raises(TypeError, match="floating-point input"):
        peer(torch.zeros(3, 16, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input of shape \(\.\.\., 16\), got shape \(3, 15\)"):
        peer(torch.randn(3, 15))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_input_is_cast_to_the_parameters_dtype(dtype):
    peer = PEER(8, n_keys=4, heads=2, topk=2)
    x = torch.randn(3, 8).to(dtype)
    y = peer(x)
    assert y.dtype == torch.float32 and torch.equal(y, peer(x.float()))  # the cast comes first
    assert peer.double()(torch.randn(3, 8)).dtype == torch.float64


def test_defaults_follow_the_paper_and_sizes():
    defaults = {k: p.default for k, p in inspect.signature(PEER).parameters.items()}
    assert (defaults["n_keys"], defaults["heads"], defaults["topk"], defaults["activation"]) == (1024, 8, 16, "gelu")
    peer = PEER(16, n_keys=8, heads=2, topk=4, k_dim=6)
    assert peer.values.weight.shape == peer.down.weight.shape == (64, 16) and peer.out_proj is None
    assert peer.memory_bytes() == 2 * 64 * 16 * 4 and peer.memory_bytes(torch.bfloat16) == 2 * 64 * 16 * 2
    # queries 16·2·6, half scores 2·8·6, candidate sums 2·4², up-rows read 2·4·16, down-row dot products 2·4·16
    assert peer.flops_per_token() == 16 * 2 * 6 + 2 * 8 * 6 + 2 * 16 + 2 * 4 * 16 + 2 * 4 * 16
    assert peer.inactive_params() == 2 * (64 - 8) * 16
    assert "activation='gelu'" in repr(peer)
    assert isinstance(peer, memlab.ProductKeyMemory) and "PEER" in memlab.__all__


# ------------------------------------------------------------------------------------------------ the peer variant
SMALL = dict(d_model=16, n_layers=2, n_heads=2, seq_len=16, tau=4, expand_bits=1, pkm_n_keys=8, pkm_heads=2,
             pkm_topk=2)


def test_peer_variant_builds_trains_and_reports_usage(tmp_path):
    model_cfg = ModelConfig.from_dict({**SMALL, "model": "peer"})
    model = build_model(model_cfg)
    assert [b.ffn_kind for b in model.blocks] == ["dense", "peer"] and isinstance(model.blocks[1].ffn, PEER)
    assert model.shared_values is None  # each PEER layer owns its experts
    values = model.memory_parameters()["values"]
    assert [p.data_ptr() for p in values] == [model.blocks[1].ffn.values.weight.data_ptr(),
                                              model.blocks[1].ffn.down.weight.data_ptr()]
    stats = usage_statistics(model, torch.randint(0, 256, (4, 16)))
    assert set(stats) == {"layer1.peer"} and stats["layer1.peer"]["rows"] == 64
    assert 0 < stats["layer1.peer"]["fraction_used"] <= 1

    text = tmp_path / "docs.txt"
    text.write_text((stdlib_dir() / "argparse.py").read_text()[:20000])
    cfg = TrainConfig.from_dict(dict(out_dir=str(tmp_path / "runs"), text=str(text), steps=2, batch_size=2,
                                     warmup_steps=1, eval_every=2, eval_batches=1, stats_every=2, ckpt_every=2,
                                     log_every=2, fact_entities=8, name="peer"))
    results = train(model_cfg, cfg, verbose=False)
    assert results["model"] == "peer" and len(results["history"]) == 2
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in results["history"])
    assert set(results["usage"][-1]["layers"]) == {"layer1.peer"}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(pkm_v_dim=8), "pkm_v_dim=8 does not apply to peer"),
        (dict(pkm_topk=9), "pkm_topk=9 exceeds pkm_n_keys=8"),
        (dict(memory_layers=[2]), "must be distinct layer ids in [0, 2)"),
    ],
)
def test_peer_config_errors_are_clear(overrides, message):
    with pytest.raises(ValueError) as err:
        ModelConfig.from_dict({**SMALL, "model": "peer", **overrides})
    assert message in str(err.value)
