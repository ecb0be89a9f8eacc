"""Usage snapshots: what training writes for the explorer — counts that agree with the usage statistics, the
factorised softmax normaliser, qk-norm switched on the same weights, the file across resume, sweeps keeping it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from memlab.addressing.product_keys import half_scores
from memlab.lab import snapshots as snap
from memlab.lab import sweep
from memlab.lab.models import ModelConfig, build_model, usage_counts
from memlab.lab.studies import Study
from memlab.lab.train import TrainConfig, train
from memlab.layers.product_key_memory import ProductKeyMemory

TINY = dict(d_model=16, n_layers=2, n_heads=2, seq_len=16, tau=4, expand_bits=1, pkm_n_keys=8, pkm_heads=2,
            pkm_topk=2, moe_experts=4, moe_topk=2, n_memory_layers=2)


def tiny_train(tmp_path, text_file, **kw):
    base = dict(out_dir=str(tmp_path / "runs"), text=str(text_file), steps=8, batch_size=4, warmup_steps=2,
                eval_every=4, eval_batches=2, stats_every=4, ckpt_every=4, log_every=4, fact_entities=8)
    return TrainConfig.from_dict({**base, **kw})


@pytest.mark.parametrize("kind", ["memoryformer", "pkm", "memoryplus", "peer", "moe"])
def test_snapshot_counts_are_the_usage_histograms_grouped(kind):
    model = build_model(kind, **TINY)
    ids = torch.randint(0, 256, (3, 16))
    arrays = snap.take_snapshot(model, ids)
    pooled = usage_counts(model, ids)
    assert set(pooled) <= set(arrays)
    for name, flat in pooled.items():
        grouped = torch.from_numpy(arrays[name].astype(np.float64))
        assert grouped.dim() == 2
        if kind == "memoryformer":  # (K, 2^τ): table k's row b is row k·2^τ + b of the flat histogram
            assert torch.equal(grouped.reshape(-1), flat)
            assert torch.all(grouped.sum(-1) == ids.numel())  # every token hits one row per table
        else:  # per head (or the one MoE group), summed = the pooled histogram
            assert torch.equal(grouped.sum(0), flat)
        assert arrays[name].dtype.kind == "u"


def test_compact_picks_the_smallest_unsigned_dtype():
    assert snap.compact(torch.tensor([0.0, 255.0])).dtype == np.uint8
    assert snap.compact(torch.tensor([0.0, 256.0])).dtype == np.uint16
    assert snap.compact(torch.tensor([70000.0])).dtype == np.uint32
    with pytest.raises(ValueError, match="non-negative integers"):
        snap.compact(torch.tensor([0.5]))


def test_log_normalizer_factorises():
    s1, s2 = torch.randn(5, 3, 11, dtype=torch.float64), torch.randn(5, 3, 11, dtype=torch.float64) * 4
    torch.testing.assert_close(snap.log_normalizer(s1, s2), snap.log_normalizer_bruteforce(s1, s2), rtol=0,
                               atol=1e-12)


@pytest.mark.parametrize("query_norm", [None, "qk"])
def test_scores_with_qk_norm(query_norm):
    layer = ProductKeyMemory(32, n_keys=8, heads=2, topk=2, query_norm=query_norm)
    with torch.no_grad():
        layer.query.weight.mul_(20)  # large raw scores, so that on and off differ clearly
    x = torch.randn(6, 32)
    own = query_norm == "qk"
    for a, b in zip(snap.scores_with_qk_norm(layer, x, own), layer.scores(x)):
        assert torch.equal(a, b)
    on = torch.stack(snap.scores_with_qk_norm(layer, x, True))
    off = torch.stack(snap.scores_with_qk_norm(layer, x, False))
    half = layer.k_dim // 2
    assert on.abs().max() <= math.sqrt(half) + 1e-4  # unit-RMS halves: |q·k| ≤ dh, scaled by dh^-½
    assert off.abs().max() > on.abs().max()
    raw_q = layer.query(x).unflatten(-1, (2, 2, half))
    torch.testing.assert_close(off[0], half_scores(raw_q[..., 0, :], layer.keys[:, 0]))


def test_training_writes_snapshots_from_init_and_they_survive_a_resume(tmp_path, text_file):
    config = ModelConfig.from_dict({**TINY, "model": "memoryplus"})
    train(config, tiny_train(tmp_path, text_file, name="straight"), verbose=False)
    train(config, tiny_train(tmp_path, text_file, name="split", stop_after=4), verbose=False)
    train(config, tiny_train(tmp_path, text_file, name="split"), resume=True, verbose=False)
    a = snap.load_snapshots(tmp_path / "runs" / "straight")
    b = snap.load_snapshots(tmp_path / "runs" / "split")
    assert a.steps == b.steps == [0, 4, 8]
    assert set(a.arrays) == set(b.arrays)
    for key in a.arrays:
        assert np.array_equal(a.arrays[key], b.arrays[key]), key
    assert a.ids.shape == (4, 16) and a.meta["tokens"] == 64
    assert a.layers["layer0.pkm"]["shares_values_with"] == ["layer1.pkm"]
    top, lse = a.scores("layer0.pkm", 8)
    assert top.shape == (min(64, snap.SCORE_TOKENS), 2, 8)  # tokens, heads, min(SCORE_K, n) scores
    assert torch.all(top[..., :-1] >= top[..., 1:])  # sorted
    assert (a.path.stat().st_size) < 50_000


def test_a_fresh_run_replaces_an_old_snapshot_file(tmp_path, text_file):
    config = ModelConfig.from_dict({**TINY, "model": "memoryformer"})
    train(config, tiny_train(tmp_path, text_file, name="r", steps=12), verbose=False)
    assert snap.load_snapshots(tmp_path / "runs" / "r").steps == [0, 4, 8, 12]
    train(config, tiny_train(tmp_path, text_file, name="r", steps=4), verbose=False)
    assert snap.load_snapshots(tmp_path / "runs" / "r").steps == [0, 4]


def test_dense_runs_and_stats_every_0_write_no_snapshots(tmp_path, text_file):
    train(ModelConfig.from_dict({**TINY, "model": "dense"}), tiny_train(tmp_path, text_file, name="d"), verbose=False)
    train(ModelConfig.from_dict({**TINY, "model": "memoryformer"}),
          tiny_train(tmp_path, text_file, name="m", stats_every=0), verbose=False)
    assert not (tmp_path / "runs" / "d" / snap.SNAPSHOT_FILE).exists()
    assert not (tmp_path / "runs" / "m" / snap.SNAPSHOT_FILE).exists()
    with pytest.raises(FileNotFoundError, match="stats_every > 0"):
        snap.load_snapshots(tmp_path / "runs" / "m")


def test_nearest_step():
    s = snap.UsageSnapshots(None, {"layers": {}}, [0, 50, 100], np.zeros(1), {})
    assert (s.step(None), s.step("final"), s.step("init"), s.step(60), s.step(75), s.step(1000)) == (100, 100, 0, 50,
                                                                                                      50, 100)


def test_a_sweep_keeps_each_points_snapshots(tmp_path, text_file):
    study = Study("snap", "snapshots kept", {**TINY, "model": "memoryformer", "n_layers": 1},
                  {"steps": 4, "batch_size": 4, "warmup_steps": 1, "eval_every": 4, "eval_batches": 1,
                   "stats_every": 2, "ckpt_every": 2, "log_every": 4, "fact_entities": 8, "text": str(text_file)},
                  grid={"tau": [4]}, seeds=1)
    df = sweep.run_sweep(study, out=tmp_path, progress=False)
    key = df["key"][0]
    kept = snap.load_snapshots(tmp_path / "snap" / f"{key}.usage.npz")
    assert kept.steps == [0, 2, 4]
    assert not (tmp_path / "snap" / "work").exists()
    assert list(sweep.load("snap", tmp_path)["key"]) == [key]  # the .npz is not mistaken for a result
    from memlab.lab import explorer as ex

    run = ex.load_run_data(tmp_path / "snap" / f"{key}.json")  # the explorer reads a sweep point from its own files
    assert run.name == "snap: tau=4 seed 0" and run.checkpoint is None and "val_ppl" in run.results
    assert torch.equal(ex.hash_counts(ex.layer_activations(run, "layer0.mb1", "init"), 4),
                       run.snapshots.counts("layer0.mb1", 0))  # initialisation rebuilt from config and seed
    with pytest.raises(FileNotFoundError, match="kept no checkpoint"):
        ex.layer_activations(run, "layer0.mb1", "final")
    assert list(ex.find_runs(tmp_path).values()) == [tmp_path / "snap" / f"{key}.json"]


def test_expected_fraction_used():
    assert snap.expected_fraction_used(0, 256) == 0
    assert abs(snap.expected_fraction_used(2048, 256) - (1 - math.exp(-8))) < 2e-4
