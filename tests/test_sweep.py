"""The sweep runner: cache, kill-and-resume, invalidation by config hash, failed and corrupt points, shards, parallel
jobs, load/summarize (mean ± t-based CI), did-you-mean errors, and the shipped studies' definitions."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from memlab.__main__ import main
from memlab.lab import sweep
from memlab.lab.studies import STUDIES, Study, get_study, study_names

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = dict(model="memoryformer", d_model=16, n_layers=1, n_heads=2, seq_len=16, tau=4, expand_bits=1)
TINY_TRAIN = dict(steps=4, batch_size=4, warmup_steps=1, eval_every=4, eval_batches=1, stats_every=4, ckpt_every=2,
                  log_every=4, fact_entities=8)
#: --set flags that shrink a shipped study to seconds (the CLI tests)
TINY_SETS = [f"{k}={v}" for k, v in {**TINY_MODEL, "steps": 40, "batch_size": 4, "warmup_steps": 2, "eval_every": 40,
                                     "eval_batches": 1, "stats_every": 40, "ckpt_every": 1, "fact_entities": 8}.items()
             if k != "model"]


def tiny_study(text_file, name="tiny", **kw) -> Study:
    spec = dict(grid={"tau": [4, 5]}, seeds=2)
    spec.update(kw)
    return Study(name, "a tiny test study", TINY_MODEL, {**TINY_TRAIN, "text": str(text_file)}, **spec)


def result_files(folder: Path) -> dict[str, int]:
    """{result file name: mtime_ns} of the finished points in a study folder."""
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json") if p.name != "manifest.json"}


@pytest.fixture(scope="module")
def tiny_sweep(text_file, tmp_path_factory):
    """tau ∈ {4, 5} × 2 seeds at d_model = 16: tau = 5 is invalid, so 2 points train and 2 fail."""
    out = tmp_path_factory.mktemp("sweeps")
    study = tiny_study(text_file)
    df = sweep.run_sweep(study, out=out, progress=False)
    return study, out, df


# ---------------------------------------------------------------------------------------------------------- runs
def test_invalid_point_is_recorded_as_failed_and_the_rest_runs(tiny_sweep):
    study, out, df = tiny_sweep
    assert df.attrs["counts"] == {"cached": 0, "trained": 2, "failed": 2}
    assert list(df["point"]) == ["tau=4", "tau=4", "tau=5", "tau=5"] and list(df["seed"]) == [0, 1, 0, 1]
    ok, failed = df[df["status"] == "ok"], df[df["status"] == "failed"]
    assert len(ok) == 2 and ok["val_ppl"].notna().all() and ok["error"].isna().all()
    assert len(failed) == 2 and failed["val_ppl"].isna().all()
    assert failed["error"].str.contains("d_model=16 is not divisible by tau=5").all()
    assert failed["error"].str.contains("choose tau in").all()  # the message names the fix
    assert not (out / "tiny" / "work").exists()  # checkpoints of finished points are gone


def test_load_has_one_row_per_point_and_seed_with_the_documented_columns(tiny_sweep):
    study, out, df = tiny_sweep
    loaded = sweep.load("tiny", out)
    pd.testing.assert_frame_equal(loaded, df, check_like=False)
    for column in ["study", "point", "seed", "tau", "model", "params_total", "params_active", "flops_per_token",
                   "memory_mb", "tokens_per_s", "val_loss", "val_ppl", "fact_recall", "usage_fraction_used",
                   "usage_gini", "wall_seconds", "status", "error", "key"]:
        assert column in loaded.columns, column
    ok = loaded[loaded["status"] == "ok"]
    assert (ok["val_ppl"] == ok["val_loss"].map(math.exp)).all()
    assert ok["usage_fraction_used"].between(0, 1).all() and ok["usage_gini"].between(0, 1).all()
    assert (ok["params_total"] > ok["params_active"]).all()
    assert loaded["key"].is_unique
    csv = sweep.export_csv(loaded, out / "tiny.csv")
    assert pd.read_csv(csv)["point"].tolist() == loaded["point"].tolist()


def test_second_run_is_served_from_the_cache_without_training(tiny_sweep, monkeypatch):
    study, out, df = tiny_sweep
    before = result_files(out / "tiny")

    def no_training(*args, **kwargs):
        raise AssertionError("a cached point was trained again")

    monkeypatch.setattr("memlab.lab.train.train", no_training)
    start = time.perf_counter()
    again = sweep.run_sweep(study, out=out, progress=False)
    assert time.perf_counter() - start < 2.0
    assert again.attrs["counts"] == {"cached": 4, "trained": 0, "failed": 0}
    pd.testing.assert_frame_equal(again, df)
    assert result_files(out / "tiny") == before


def test_changing_one_base_value_recomputes_exactly_the_points_it_affects(text_file, tmp_path):
    # expand_bits: "e0" sets it itself (its own value wins over the base); "base" takes it from the base config
    study = tiny_study(text_file, grid=None, seeds=1, points=(("e0", {"expand_bits": 0}), ("base", {})))
    first = sweep.run_sweep(study, out=tmp_path, progress=False)
    assert first.attrs["counts"]["trained"] == 2
    before = result_files(tmp_path / "tiny")
    changed = sweep.run_sweep(study, out=tmp_path, overrides={"expand_bits": 2}, progress=False)
    assert changed.attrs["counts"] == {"cached": 1, "trained": 1, "failed": 0}
    keys = dict(zip(changed["point"], changed["key"]))
    assert keys["e0"] == dict(zip(first["point"], first["key"]))["e0"]
    assert keys["base"] != dict(zip(first["point"], first["key"]))["base"]
    after = result_files(tmp_path / "tiny")
    assert after[f"{keys['e0']}.json"] == before[f"{keys['e0']}.json"]  # untouched
    # a base value every point uses changes every key; log_every is not part of the key
    plan = {t.label: t.key for t in sweep.plan(study, out=tmp_path)}
    assert {t.label: t.key for t in sweep.plan(study, overrides={"log_every": 1}, out=tmp_path)} == plan
    assert not set(plan.values()) & {t.key for t in sweep.plan(study, overrides={"lr": 1e-3}, out=tmp_path)}


def test_corrupt_result_file_is_reported_and_recomputed(text_file, tmp_path):
    study = tiny_study(text_file, grid={"tau": [4]}, seeds=1)
    first = sweep.run_sweep(study, out=tmp_path, progress=False)
    path = tmp_path / "tiny" / f"{first['key'][0]}.json"
    path.write_text(path.read_text()[:100])  # half a file
    with pytest.warns(sweep.SweepWarning, match="corrupt result file"):
        again = sweep.run_sweep(study, out=tmp_path, progress=False)
    assert again.attrs["counts"] == {"cached": 0, "trained": 1, "failed": 0}
    assert path.with_name(path.name + ".corrupt").exists()
    assert json.loads(path.read_text())["status"] == "ok"
    assert again["val_loss"][0] == first["val_loss"][0]  # the same run, recomputed


def test_shards_are_disjoint_and_cover_the_study(text_file, tmp_path):
    tasks = sweep.plan("mf-tau")
    assert len(tasks) == 4 * 3 and len({t.key for t in tasks}) == 12
    for n in (1, 2, 5, 12, 13):
        slices = [sweep.shard_tasks(tasks, i, n) for i in range(n)]
        keys = [t.key for s in slices for t in s]
        assert sorted(keys) == sorted(t.key for t in tasks) and len(set(keys)) == len(keys)
        assert max(map(len, slices)) - min(map(len, slices)) <= 1
    assert sweep.parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            sweep.parse_shard(bad)
    # two shards run one after the other: together they are the whole study
    study = tiny_study(text_file, grid={"expand_bits": [0, 1, 2]}, seeds=1)
    a = sweep.run_sweep(study, out=tmp_path, shard="0/2", progress=False)
    b = sweep.run_sweep(study, out=tmp_path, shard=(1, 2), progress=False)
    assert len(a) + len(b) == 3 and not set(a["key"]) & set(b["key"])
    assert sweep.run_sweep(study, out=tmp_path, progress=False).attrs["counts"]["cached"] == 3


def test_parallel_jobs_give_the_same_results(text_file, tmp_path):
    study = tiny_study(text_file, grid={"expand_bits": [0, 1]}, seeds=1)
    parallel = sweep.run_sweep(study, out=tmp_path / "a", jobs=2, progress=False)
    assert parallel.attrs["counts"] == {"cached": 0, "trained": 2, "failed": 0}
    serial = sweep.run_sweep(study, out=tmp_path / "b", progress=False)  # 1 torch thread here, as in each worker
    assert list(parallel["key"]) == list(serial["key"])
    assert list(parallel["val_loss"]) == list(serial["val_loss"])


def run_cli(args, out, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "memlab", "sweep", *args, "--out", str(out), "--no-progress"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


def test_sigkill_mid_sweep_then_rerun_resumes_without_redoing_finished_points(text_file, tmp_path):
    args = ["--study", "mf-expand-bits", "--seeds", "1", "--set", f"text={text_file}"]
    for item in TINY_SETS:
        args += ["--set", item]
    killed_out, folder = tmp_path / "killed", tmp_path / "killed" / "mf-expand-bits"
    proc = run_cli(args, killed_out, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if result_files(folder) and list(folder.glob("work/*/checkpoint.pt")):
            time.sleep(0.05)  # one point finished, another one a few steps in
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the sweep finished before it could be killed:\n" + proc.stdout.read()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    finished = result_files(folder)
    assert 1 <= len(finished) < 4
    import torch

    interrupted = {p.parent.name: torch.load(p, weights_only=False)["state"]["step"]
                   for p in folder.glob("work/*/checkpoint.pt")}

    rerun = run_cli(args, killed_out)
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, output
    assert f"{len(finished)} cached, {4 - len(finished)} trained, 0 failed" in output
    after = result_files(folder)
    assert len(after) == 4 and all(after[name] == mtime for name, mtime in finished.items())  # not redone
    records = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json") if p.name != "manifest.json"}
    in_progress = {key: step for key, step in interrupted.items() if f"{key}.json" not in finished}
    assert in_progress, "the kill should land in the middle of a point"
    for key, step in in_progress.items():  # the point in progress continued from its checkpoint
        assert records[key]["resumed_from"] == step and 0 < step <= 40

    straight = run_cli(args, tmp_path / "straight")
    assert straight.wait(timeout=300) == 0
    straight.stdout.close()
    reference = sweep.load("mf-expand-bits", tmp_path / "straight")
    resumed = sweep.load("mf-expand-bits", killed_out)
    assert list(reference["key"]) == list(resumed["key"])
    assert list(reference["val_loss"]) == list(resumed["val_loss"])  # bit-identical to the uninterrupted sweep
    for key in reference["key"]:
        ref = json.loads((tmp_path / "straight" / "mf-expand-bits" / f"{key}.json").read_text())
        assert [h["loss"] for h in ref["results"]["history"]] == [h["loss"] for h in records[key]["results"]["history"]]

    again = run_cli(args, killed_out)  # the third time: served from the cache
    output = again.communicate(timeout=60)[0]
    assert "4 cached, 0 trained, 0 failed" in output and "expand_bits=3" in output
    assert (folder / "results.csv").exists()


# ---------------------------------------------------------------------------------------------------------- statistics
def test_t_quantile_matches_known_values():
    assert sweep.t_quantile(0.975, 1) == pytest.approx(12.706204736174703, rel=1e-12)
    assert sweep.t_quantile(0.975, 2) == pytest.approx(4.302652729749464, rel=1e-12)
    for df, t in [(3, 3.182446305284263), (4, 2.776445105197793), (10, 2.228138851986274),
                  (30, 2.042272456301238)]:
        assert sweep.t_quantile(0.975, df) == pytest.approx(t, rel=1e-9)
    assert sweep.t_quantile(0.995, 5) == pytest.approx(4.032142983557536, rel=1e-9)
    assert sweep.t_quantile(0.025, 4) == pytest.approx(-2.776445105197793, rel=1e-9)
    assert sweep.t_quantile(0.975, 10**6) == pytest.approx(1.959966, rel=1e-5)


def test_summarize_gives_mean_and_t_confidence_interval_over_seeds():
    df = pd.DataFrame({
        "point": ["a", "a", "a", "b", "b", "c"], "seed": [0, 1, 2, 0, 1, 0],
        "val_ppl": [1.0, 2.0, 3.0, 10.0, 10.0, 7.0], "fact_recall": [0.1, 0.2, 0.3, 0.5, 0.5, 0.4],
        "status": ["ok", "ok", "ok", "ok", "failed", "ok"],
    })
    df.loc[4, "val_ppl"] = float("nan")
    s = sweep.summarize(df, by="point", metrics=["val_ppl", "fact_recall"])
    assert list(s.columns) == ["point", "n", "val_ppl_mean", "val_ppl_std", "val_ppl_ci",
                               "fact_recall_mean", "fact_recall_std", "fact_recall_ci"]
    a, b, c = (s[s["point"] == p].iloc[0] for p in "abc")
    assert (a["n"], b["n"], c["n"]) == (3, 1, 1)  # the failed row does not count
    assert a["val_ppl_mean"] == 2.0 and a["val_ppl_std"] == pytest.approx(1.0)
    assert a["val_ppl_ci"] == pytest.approx(4.302652729749464 / math.sqrt(3))  # t_{0.975, 2} · s / √n
    assert a["fact_recall_ci"] == pytest.approx(0.4302652729749464 / math.sqrt(3))
    assert math.isnan(b["val_ppl_ci"]) and math.isnan(c["val_ppl_ci"]) and c["val_ppl_mean"] == 7.0
    s90 = sweep.summarize(df, metrics=["val_ppl"], confidence=0.90)
    assert s90["val_ppl_ci"][0] == pytest.approx(2.919985580355516 / math.sqrt(3))
    text = sweep.summary_table(s, ["val_ppl"])
    assert "2.000 ± 2.484" in text and "10.000" in text


# ---------------------------------------------------------------------------------------------------------- errors
def test_unknown_study_key_and_column_say_did_you_mean(tmp_path, capsys):
    with pytest.raises(ValueError, match="did you mean 'mf-tau'"):
        get_study("mf-tua")
    with pytest.raises(ValueError, match="did you mean 'tau'"):
        sweep.plan("mf-tau", overrides={"tua": 4})
    with pytest.raises(ValueError, match="did you mean 'pkm_topk'"):
        sweep.plan(Study("x", "x", {"model": "pkm"}, {}, grid={"pkm_topkk": [2]}))
    with pytest.raises(FileNotFoundError, match="did you mean 'pkm-keys'"):
        sweep.load("pkm-key", tmp_path)
    with pytest.raises(ValueError, match="did you mean 'val_ppl'"):
        sweep.summarize(pd.DataFrame({"point": ["a"], "val_ppl": [1.0]}), metrics=["val_pp"])
    assert main(["sweep", "--study", "pkm-topc", "--out", str(tmp_path)]) == 2
    assert "did you mean 'pkm-topk'" in capsys.readouterr().err
    assert main(["sweep", "--study", "mf-tau", "--set", "lr=1", "--shard", "2/2", "--out", str(tmp_path)]) == 2
    assert "0 <= i < n" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------- studies
def test_shipped_studies_resolve_to_valid_configs_with_three_seeds():
    assert set(study_names()) >= {"mf-tau", "mf-lr", "mf-expand-bits", "mf-temperature", "mf-weighting", "pkm-topk",
                                  "pkm-heads", "pkm-keys", "memoryplus-parts", "placement", "matched-flops"}
    for name in study_names(available_only=True):
        study = STUDIES[name]
        tasks = sweep.plan(name)
        assert study.seeds >= 3, name
        assert len(tasks) == sum(study.seeds_of(label) for label, _ in study.point_list()), name  # seeds_at
        assert [t.error for t in tasks if t.error] == [], name
        assert len({t.key for t in tasks}) == len(tasks), f"{name}: two points have the same config"
        assert "/step" in study.notes, f"{name}: say the measured time per step in its notes"
    for name in set(study_names()) - set(study_names(available_only=True)):
        with pytest.raises(ValueError, match="cannot run here"):
            sweep.plan(name)
    assert main(["sweep", "--list"]) == 0


def test_fields_added_later_keep_cached_keys_while_at_their_default():
    """A result recorded before a config field existed keeps its key: the field is left out while at its default,
    and counts as soon as a point sets it to anything else."""
    task = sweep.plan("mf-tau", seeds=1)[0]
    older_model = {k: v for k, v in task.model.items() if k not in sweep.KEY_ONLY_IF_SET["model"]}
    older_train = {k: v for k, v in task.train.items() if k not in sweep.KEY_ONLY_IF_SET["train"]}
    assert sweep.config_key(older_model, older_train) == sweep.config_key(task.model, task.train)
    for part, fields in sweep.KEY_ONLY_IF_SET.items():
        for name in fields:
            model, train = dict(task.model), dict(task.train)
            (model if part == "model" else train)[name] = "something else"
            assert sweep.config_key(model, train) != task.key, name
