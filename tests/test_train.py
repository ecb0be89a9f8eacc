"""The trainer: LR groups and schedule, atomic checkpoints, exact resume, results files, generation, CLI errors, demo."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from memlab.lab import data as data_lib
from memlab.__main__ import main
from memlab.lab.generate import sample_text
from memlab.lab.models import ModelConfig, build_model
from memlab.lab.train import (TrainConfig, build_run, load_checkpoint, load_run, lr_factor, make_optimizer,
                              record_validation, save_checkpoint, train, train_step)

TINY = dict(d_model=16, n_layers=2, n_heads=2, seq_len=16, tau=4, expand_bits=1, pkm_n_keys=8, pkm_heads=2,
            pkm_topk=2, moe_experts=4, moe_topk=2)


def tiny_train(tmp_path, text_file, **kw):
    base = dict(out_dir=str(tmp_path / "runs"), text=str(text_file), steps=8, batch_size=4, warmup_steps=2,
                eval_every=4, eval_batches=2, stats_every=4, ckpt_every=4, log_every=4, fact_entities=8,
                fact_fraction=0.25)
    return TrainConfig.from_dict({**base, **kw})


@pytest.mark.parametrize("kind", ["memoryformer", "memoryplus", "moe"])
def test_resume_reproduces_the_uninterrupted_loss_curve(kind, tmp_path, text_file):
    model_cfg = ModelConfig.from_dict({**TINY, "model": kind})
    straight = train(model_cfg, tiny_train(tmp_path, text_file, name="straight"), verbose=False)
    killed = train(model_cfg, tiny_train(tmp_path, text_file, name="split", stop_after=4), verbose=False)
    assert killed["stopped_at"] == 4 and len(killed["history"]) == 4
    resumed = train(model_cfg, tiny_train(tmp_path, text_file, name="split"), resume=True, verbose=False)
    a = [h["loss"] for h in straight["history"]]
    b = [h["loss"] for h in resumed["history"]]
    assert len(a) == len(b) == 8
    assert a == b  # bit-identical on CPU
    assert [e["val_loss"] for e in straight["evals"]] == [e["val_loss"] for e in resumed["evals"]]
    assert straight["val_ppl"] == resumed["val_ppl"]


def test_the_step_functions_are_the_loop_train_runs(tmp_path, text_file):
    model_cfg = ModelConfig.from_dict({**TINY, "model": "memoryformer"})
    run = build_run(model_cfg, tiny_train(tmp_path, text_file, name="by_hand"), verbose=False)
    first, second = train_step(run), train_step(run)
    assert (first["step"], second["step"]) == (1, 2) and run.state["history"] == [first, second]
    assert record_validation(run)["step"] == 2
    save_checkpoint(run)
    assert load_checkpoint(run.run_dir)[1]["state"]["step"] == 2
    whole = train(model_cfg, tiny_train(tmp_path, text_file, name="whole"), verbose=False)
    assert [h["loss"] for h in whole["history"][:2]] == [first["loss"], second["loss"]]


def test_time_budget_stops_early_and_still_finishes_the_run(tmp_path, text_file):
    cfg = tiny_train(tmp_path, text_file, name="budget", max_seconds=0.0)
    results = train(ModelConfig.from_dict({**TINY, "model": "dense"}), cfg, verbose=False)
    assert results["stopped_early"] and results["steps"] == 1 and results["evals"][-1]["step"] == 1
    assert load_run(tmp_path / "runs" / "budget")["steps"] == 1


def test_run_writes_results_and_checkpoint_atomically(tmp_path, text_file):
    cfg = tiny_train(tmp_path, text_file, name="mf")
    results = train(ModelConfig.from_dict({**TINY, "model": "memoryformer"}), cfg, verbose=False)
    run_dir = tmp_path / "runs" / "mf"
    assert {p.name for p in run_dir.iterdir()} == {"checkpoint.pt", "results.json", "history.csv", "evals.csv",
                                                  "usage_snapshots.npz"}  # memlab.lab.snapshots
    loaded = load_run(run_dir)
    assert loaded["val_ppl"] == pytest.approx(math.exp(loaded["val_loss"]))
    assert loaded["params_total"] == results["params_total"] and len(loaded["history"]) == 8
    assert 0 <= loaded["fact_recall"] <= 1 and 0 <= loaded["fact_qa_heldout"] <= 1
    assert (run_dir / "history.csv").read_text().startswith("step,loss,lr,tokens,tokens_per_s")
    # usage statistics logged per memory layer during training
    assert [u["step"] for u in loaded["usage"]] == [4, 8]
    assert {"layer0.qkv", "layer0.mb1", "layer0.mb2", "layer1.qkv"} <= set(loaded["usage"][0]["layers"])
    model, ckpt = load_checkpoint(run_dir)
    assert ckpt["state"]["step"] == 8
    text = sample_text(model, "The ", max_new_tokens=20, seed=0)
    assert text.startswith("The ") and len(text.encode(errors="replace")) >= 4


def test_learning_rate_groups_and_schedule():
    cfg = TrainConfig(lr=2e-3, table_lr_mult=3.0, values_lr=1e-3, steps=100, warmup_steps=10, min_lr_ratio=0.1)
    mf = make_optimizer(build_model("memoryformer", **TINY), cfg)
    lrs = {g["name"]: g["base_lr"] for g in mf.param_groups}
    assert lrs["tables"] == pytest.approx(6e-3) and lrs["weights"] == 2e-3 and "values" not in lrs
    n_tables = sum(p.numel() for g in mf.param_groups if g["name"] == "tables" for p in g["params"])
    assert n_tables == 2 * (3 * 64 * 16 + 64 * 20 + 128 * 16)
    mp = make_optimizer(build_model("memoryplus", **TINY), cfg)
    groups = {g["name"]: g for g in mp.param_groups}
    assert groups["values"]["base_lr"] == 1e-3 and groups["values"]["weight_decay"] == 0.0
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0) and lr_factor(100, cfg) == pytest.approx(0.1)
    assert lr_factor(55, cfg) == pytest.approx(0.55)


def test_cli_train_and_generate(tmp_path, text_file, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", "--model", "pkm", "--text", str(text_file), "--name", "cli", "--steps", "4", "--quiet",
            *[f"--set={k}={v}" for k, v in TINY.items()], "--set", "batch_size=2", "--set", "eval_every=2",
            "--set", "eval_batches=1", "--set", "fact_entities=0"]
    assert main(args) == 0
    assert json.loads((tmp_path / "runs" / "cli" / "results.json").read_text())["steps"] == 4
    assert main(["generate", "runs/cli", "--prompt", "ab", "--tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("ab")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--set", "d_modl=64"], "unknown config key 'd_modl' (did you mean 'd_model'?)"),
        (["train", "--model", "memoryformer", "--set", "d_model=100", "--set", "n_heads=5"],
         "d_model=100 is not divisible by tau=8"),
        (["train", "--set", "d_model=100", "--set", "n_heads=3"], "d_model=100 is not divisible by n_heads=3"),
        (["train", "--text", "no/such/file.txt", "--set", "d_model=16"], "corpus file not found: no/such/file.txt"),
        (["train", "--corpus", "wiki"], "unknown corpus 'wiki'"),
        (["train", "--name", "ghost", "--resume", "--model", "dense"], "--resume: no checkpoint at"),
        (["train", "--set", "steps=0"], "steps must be a positive integer"),
        (["train", "--set", "oops"], "--set expects key=value"),
        (["generate", "runs/none"], "no checkpoint at"),
    ],
)
def test_cli_errors_are_one_clear_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data_lib, "build_python_docs", lambda *a, **k: pytest.fail("should fail before loading"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_demo_fast_writes_table_and_plot(tmp_path, text_file, monkeypatch, capsys):
    from memlab.lab import demo

    corpus = data_lib.load_text_file(text_file)
    monkeypatch.setattr(data_lib, "load_corpus", lambda *a, **k: corpus)
    monkeypatch.setattr(demo, "FAST_TRAIN", {**demo.FAST_TRAIN, "steps": 4, "eval_every": 2, "stats_every": 2})
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "val ppl" in printed and "fact recall" in printed
    for name in demo.DEMO_MODELS:
        assert name in printed
    assert (out / "loss_curves.png").stat().st_size > 1000
    rows = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in rows] == list(demo.DEMO_MODELS)
    assert (out / "results.csv").read_text().startswith("model,params_total,params_active")
    assert all(r["tokens_per_s_side_by_side"] > 0 and r["speed_rounds"] == demo.FAST_SPEED_ROUNDS for r in rows)
    assert "timed side by side" in printed

    # The side-by-side timing trains on from the checkpoints but never writes them.
    checkpoints = {p: p.read_bytes() for p in out.glob("*/checkpoint.pt")}
    assert len(checkpoints) == len(demo.DEMO_MODELS) + len(demo.CAPACITY_PROBE_MODELS)
    models, trains = demo.demo_configs(True, out_dir=str(out))
    seconds = demo.measure_step_speed(models, trains, corpus, rounds=1)
    assert set(seconds) == set(demo.DEMO_MODELS) and min(seconds.values()) > 0
    assert {p: p.read_bytes() for p in out.glob("*/checkpoint.pt")} == checkpoints


def test_bench_demo_repeats_the_demo_and_records_the_spread(tmp_path, text_file, monkeypatch):
    """kernels/bench_demo.py --quick --runs 2: both speed ratios per run, and their min/max over the runs."""
    import importlib.util

    from memlab.lab import demo

    corpus = data_lib.load_text_file(text_file)
    monkeypatch.setattr(data_lib, "load_corpus", lambda *a, **k: corpus)
    monkeypatch.setattr(demo, "FAST_TRAIN", {**demo.FAST_TRAIN, "steps": 3, "eval_every": 3, "stats_every": 3})
    spec = importlib.util.spec_from_file_location(
        "bench_demo", Path(__file__).resolve().parents[1] / "kernels" / "bench_demo.py")
    bench_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_demo)
    assert bench_demo.main(["--quick", "--runs", "2", "--out", str(tmp_path)]) == 0
    files = list(tmp_path.glob("demo-*.json"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    data = json.loads(files[0].read_text())
    assert len(data["runs"]) == 2 and data["speed_rounds"] == demo.FAST_SPEED_ROUNDS
    assert set(data["runs"][0]["ratios_to_dense"]) == {"memoryformer", "memoryplus"}
    for key in ("memoryformer | side_by_side", "memoryformer | whole_runs", "memoryplus | side_by_side"):
        s = data["spread"][key]
        assert len(s["values"]) == 2 and 0 < s["min"] <= s["max"] and s["min"] in s["values"]
    model, kind = "memoryformer", "side_by_side"
    run = data["runs"][1]
    assert run["ratios_to_dense"][model][kind] == pytest.approx(
        run["tokens_per_s_side_by_side"][model] / run["tokens_per_s_side_by_side"]["dense"])
