"""Tiny LMs (memlab.lab.models): every variant of the registry runs forward/backward, is causal, and reports
hand-checked sizes and FLOPs; a new variant is one registry entry."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from memlab import PEER, HashMemory, MemoryBlock, MemoryPlus, ProductKeyMemory, SharedValues
from memlab.lab.models import MODEL_TYPES, VARIANTS, ModelConfig, Variant, build_model, ffn_kind, usage_statistics
from memlab.lab.models.gpt import MemoryFormerAttention, apply_rope, rope_tables
from memlab.lab.models.moe import MoEFFN

# V=256, d=16, 2 layers, 2 heads, s=8, tau=4, e=1, 8² = 64 shared values, 2 heads × top-2, 4 experts top-2.
SMALL = dict(d_model=16, n_layers=2, n_heads=2, seq_len=8, tau=4, expand_bits=1, pkm_n_keys=8, pkm_heads=2,
             pkm_topk=2, moe_experts=4, moe_topk=2)


def small(model, **kw):
    torch.manual_seed(0)
    return build_model(model, **{**SMALL, **kw})


@pytest.mark.parametrize("kind", MODEL_TYPES)
def test_forward_backward_every_variant(kind):
    model = small(kind)
    ids = torch.randint(0, 256, (3, 8), generator=torch.Generator().manual_seed(1))
    logits, loss = model(ids, ids)
    assert logits.shape == (3, 8, 256)
    assert torch.isfinite(loss) and abs(loss.item() - 5.545) < 0.5  # ≈ log 256 at init
    (loss + model.aux_loss()).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert grads["tok_emb.weight"].abs().sum() > 0
    for group, params in model.memory_parameters().items():
        for p in params:
            assert p.grad.abs().sum() > 0, group  # tables and values learn


@pytest.mark.parametrize("kind", MODEL_TYPES)
def test_every_variant_is_causal(kind):
    model = small(kind).eval()
    ids = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 256
    a, _ = model(ids)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_memoryformer_qkv_share_one_hash_and_have_no_output_projection(monkeypatch):
    model = small("memoryformer")
    attn = model.blocks[0].attn
    assert isinstance(attn, MemoryFormerAttention)
    assert not any(isinstance(m, nn.Linear) for m in attn.modules())  # no W_O, no dense projection at all
    assert not any(isinstance(m, nn.Linear) for m in model.modules())  # tied head: no FC layer left
    calls = []
    for name in ("q", "k", "v"):
        layer = getattr(attn, name)
        original = layer.address
        monkeypatch.setattr(layer, "address", lambda x, n=name, f=original: (calls.append(n), f(x))[1])
    model(torch.randint(0, 256, (1, 8)))
    assert calls == ["q"]  # one hash computation for Q, K and V
    assert isinstance(model.blocks[0].ffn, MemoryBlock)


def test_memoryformer_attention_matches_three_separate_layers():
    model = small("memoryformer")
    attn = model.blocks[1].attn
    x = torch.randn(2, 8, 16)
    q, k, v = attn.qkv(x)
    torch.testing.assert_close(q, attn.q(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(k, attn.k(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(v, attn.v(x), rtol=1e-5, atol=1e-6)


def test_memory_layers_share_one_value_pool():
    model = small("memoryplus", n_layers=4, memory_layers=[1, 3])
    memories = [b.ffn for b in model.blocks if isinstance(b.ffn, MemoryPlus)]
    assert len(memories) == 2
    assert all(m.memory.values is model.shared_values for m in memories)
    assert isinstance(model.shared_values, SharedValues)
    n_values_params = sum(p.numel() for p in model.parameters() if p is model.shared_values.weight)
    assert n_values_params == 64 * 16  # counted once
    assert isinstance(small("pkm").blocks[1].ffn, ProductKeyMemory)


def test_default_memory_layers_are_centred_with_stride():
    assert ModelConfig(n_layers=24).memory_layer_ids() == (4, 12, 20)  # the paper's 24-layer setting
    assert ModelConfig(n_layers=4).memory_layer_ids() == (2,)
    assert ModelConfig(n_layers=2).memory_layer_ids() == (1,)
    assert ModelConfig(n_layers=12, n_memory_layers=3).memory_layer_ids() == (2, 6, 10)


# ------------------------------------------------------------------------------------------------ hand-computed sizes
# dense layer: 2 LayerNorms 64 + W_QKV 16·48 + W_O 16·16 + FFN 2·16·64 = 3136; embedding 4096 (tied head); final norm 32.
# FLOPs/token (s=8): mixing 2·8·16 per layer, projections 4·16², FFN 2·16·64, head 16·256.
EXPECTED = {
    #              total   active  memory bytes  FLOPs/token
    "dense":        (10400, 10400, 0, 512 + 2048 + 4096 + 4096),
    # QKV: 3 tables of 4·2^4 rows × 16; MB: 64 × 20 + LN(20) + 4·2^5 rows × 16; active rows: K per table
    "memoryformer": (17136, 5008, 4 * 2 * (3 * 1024 + 1280 + 2048), 512 + 2 * (3 * 4 * 16 + 16) + 2 * (96 + 100 + 84) + 4096),
    # layer 1: query 16·16 + keys 2·2·8·4 + RMSNorm(4) + W1, W2 16·16; values 64 × 16 (2·2 rows read per token)
    "memoryplus":   (10276, 10276 - 60 * 16, 64 * 16 * 4, 512 + 2048 + 2048 + (256 + 128 + 8 + 64 + 512 + 16) + 4096),
    "pkm":          (9760, 9760 - 60 * 16, 64 * 16 * 4, 512 + 2048 + 2048 + (256 + 128 + 8 + 64) + 4096),
    # experts: 4 × (16·32 + 32·16) per layer, 2 of them active; router 16·4
    "moe":          (14624, 10400 + 2 * 64, 0, 512 + 2048 + 2 * (64 + 2 * 2 * 16 * 32) + 4096),
    # layer 1: query 16·16 + keys 2·2·8·4 + up-rows v and down-rows u, 64 × 16 each (2·2 experts read per token);
    # FLOPs: PKM's count without an output projection + 2·2 down-row dot products of 16
    "peer":         (10784, 10784 - 2 * 60 * 16, 2 * 64 * 16 * 4, 512 + 2048 + 2048 + (256 + 128 + 8 + 64 + 64) + 4096),
}


def test_registry_is_the_list_of_model_types():
    assert MODEL_TYPES == tuple(VARIANTS) == ("dense", "moe", "memoryformer", "pkm", "memoryplus", "peer")
    assert set(EXPECTED) == set(MODEL_TYPES)  # every variant has hand counts below
    assert all(isinstance(v, Variant) and v.description for v in VARIANTS.values())


@pytest.mark.parametrize("kind", MODEL_TYPES)
def test_params_memory_and_flops_match_hand_counts(kind):
    model = small(kind)
    total, active, mem_bytes, flops = EXPECTED[kind]
    counts = model.param_counts()
    assert counts == {"total": total, "active": active}
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert model.memory_bytes() == mem_bytes
    assert model.flops_per_token()["total"] == flops
    report = model.report()
    assert report["params_total"] == total and report["flops_per_token"] == flops
    assert report["memory_mb"] == pytest.approx(mem_bytes / 1e6)


def test_moe_has_dense_active_params_plus_router():
    dense, moe = small("dense").param_counts(), small("moe").param_counts()
    assert moe["active"] - dense["active"] == 2 * 16 * 4  # the routers
    assert moe["total"] > moe["active"]


def test_dense_flops_follow_the_papers_block_formula():
    from memlab import flops

    cfg = dict(d_model=64, n_layers=3, n_heads=4, seq_len=32)
    model = build_model("dense", **cfg)
    f = model.flops_per_token()
    per_seq = (f["total"] - f["head"]) * 32
    assert per_seq == 3 * flops.transformer_block_flops(32, 64)  # 2s²d + 12sd² per block


def test_untied_head_counts_one_embedding_row_active():
    model = small("dense", tied_head=False)
    counts = model.param_counts()
    assert counts["total"] == 10400 + 4096
    assert counts["active"] == 10400 + 16


def test_rope_is_a_rotation_and_leaves_the_rest_alone():
    x = torch.randn(2, 2, 8, 16)
    cos, sin = rope_tables(8, 4, 10000.0)
    y = apply_rope(x, cos, sin, 4)
    torch.testing.assert_close(y[..., 4:], x[..., 4:])
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[:, :, 0], x[:, :, 0])  # position 0: angle 0


def test_ffn_kind_per_layer():
    kinds = {m: [ffn_kind(ModelConfig(model=m, n_layers=4, memory_layers=(1, 3)), i) for i in range(4)]
             for m in MODEL_TYPES}
    assert kinds["dense"] == ["dense"] * 4 and kinds["moe"] == ["moe"] * 4
    assert kinds["memoryformer"] == ["memoryblock"] * 4
    for m in ("pkm", "memoryplus", "peer"):
        assert kinds[m] == ["dense", m, "dense", m]
    model = small("peer", n_layers=4, memory_layers=[1, 3])
    assert [b.ffn_kind for b in model.blocks] == kinds["peer"]
    assert [type(b.ffn) for b in model.blocks][1::2] == [PEER, PEER]


def test_a_new_variant_is_one_registry_entry(monkeypatch):
    """Register a variant the package does not ship (a plain product-key memory in every layer, each with its own
    values): building, validation, accounting and usage statistics follow from the entry alone."""
    def check(c):
        if c.pkm_topk > c.pkm_n_keys:
            raise ValueError("pkm_topk too large for pkm-everywhere")

    monkeypatch.setitem(VARIANTS, "pkm-everywhere", Variant(
        "a product-key memory with its own values in every layer",
        ffn=lambda c, values: ProductKeyMemory(c.d_model, n_keys=c.pkm_n_keys, heads=c.pkm_heads, topk=c.pkm_topk),
        ffn_kind="pkm", ffn_memories=lambda ffn: {"pkm": ffn}, check=check,
    ))
    model = small("pkm-everywhere")
    assert [b.ffn_kind for b in model.blocks] == ["pkm", "pkm"] and model.shared_values is None
    assert all(isinstance(b.ffn, ProductKeyMemory) for b in model.blocks)
    ids = torch.randint(0, 256, (2, 8))
    _, loss = model(ids, ids)
    loss.backward()
    assert set(usage_statistics(model, ids)) == {"layer0.pkm", "layer1.pkm"}
    assert len(model.memory_parameters()["values"]) == 2 and model.memory_bytes() == 2 * 64 * 16 * 4
    with pytest.raises(ValueError, match="pkm_topk too large for pkm-everywhere"):
        small("pkm-everywhere", pkm_topk=9)


def test_generate_and_usage_statistics():
    model = small("memoryformer")
    out = model.generate(torch.zeros(1, 3, dtype=torch.long), 10, temperature=0)
    assert out.shape == (1, 13)
    stats = usage_statistics(model, torch.randint(0, 256, (4, 8)))
    assert set(stats) == {f"layer{i}.{n}" for i in range(2) for n in ("qkv", "mb1", "mb2")}
    assert 0 < stats["layer0.qkv"]["fraction_used"] <= 1
    assert stats["layer0.mb2"]["rows"] == 4 * 2**5
    pkm_stats = usage_statistics(small("memoryplus"), torch.randint(0, 256, (4, 8)))
    assert set(pkm_stats) == {"layer1.pkm"} and pkm_stats["layer1.pkm"]["rows"] == 64
    peer_stats = usage_statistics(small("peer"), torch.randint(0, 256, (4, 8)))
    assert set(peer_stats) == {"layer1.peer"} and peer_stats["layer1.peer"]["rows"] == 64
    assert set(usage_statistics(small("dense"), torch.randint(0, 256, (1, 8)))) == set()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(d_modl=64), "did you mean 'd_model'"),
        (dict(model="memoryformer", d_model=100, n_heads=4, tau=8), "d_model=100 is not divisible by tau=8"),
        (dict(d_model=30, n_heads=4), "d_model=30 is not divisible by n_heads=4"),
        (dict(model="transformer"), "is not one of"),
        (dict(model="pkm", pkm_topk=40, pkm_n_keys=32), "pkm_topk=40 exceeds pkm_n_keys=32"),
        (dict(model="pkm", n_layers=2, memory_layers=[5]), "must be distinct layer ids in [0, 2)"),
        (dict(model="peer", d_model=16, n_heads=2, pkm_v_dim=8), "pkm_v_dim=8 does not apply to peer"),
        (dict(model="moe", moe_topk=9, moe_experts=8), "moe_topk=9 exceeds"),
        (dict(n_layers=0), "n_layers must be a positive integer"),
    ],
)
def test_config_errors_are_clear(overrides, message):
    with pytest.raises(ValueError, match=None) as err:
        ModelConfig.from_dict(overrides)
    assert message in str(err.value)


def test_config_round_trips_through_a_dict():
    cfg = ModelConfig.from_dict({**SMALL, "model": "pkm", "memory_layers": [0, 1]})
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_moe_routes_top_k_and_balances():
    moe = MoEFFN(8, 16, n_experts=4, topk=2)
    x = torch.randn(5, 8)
    experts, gates, probs = moe.route(x)
    assert experts.shape == gates.shape == (5, 2)
    torch.testing.assert_close(gates.sum(-1), torch.ones(5))
    y = moe(x)
    ref = torch.zeros(5, 8)
    for t in range(5):
        for slot in range(2):
            e = experts[t, slot]
            ref[t] += gates[t, slot] * (torch.nn.functional.gelu(x[t] @ moe.w1[e]) @ moe.w2[e])
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    assert moe.aux_loss > 0


def test_memory_layers_use_memlab_modules():
    model = small("memoryformer")
    assert sum(isinstance(m, HashMemory) for m in model.modules()) == 2 * (3 + 2)
