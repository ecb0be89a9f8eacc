"""Memory parallelism: values sharded by columns over 2 CPU processes (gloo), spawned from pytest.

Starting a process costs seconds, so the checks run in a few sessions (module-scoped fixtures), each one
``memlab.lab.distributed.run_ranks`` call with a wall-clock deadline and a collective timeout: a rank that dies or
hangs fails the test with every rank's story (``RanksFailed``), never a hang.

* the exchange: the sharded read's output and gradients against the one-process ``embedding_bag`` over random shapes
  (odd widths, one column per rank, uneven and empty token counts, duplicate rows in a bag and across ranks), the
  sparse path with ``RowSparseAdam`` on the slices, the layers (PKM, Memory+, PEER), a MemoryFormer table, the
  row-sharded reference of notebook 10, and the bytes sent against ``memlab.lab.comm_model``;
* training: a 2-rank run against the 1-rank run's loss curve; a checkpoint re-sharded 2 → 1 → 2; 2-rank resume;
* failure: one rank killed mid-training → a clear error on the other within seconds; a rank that hangs → the
  other fails at the collective timeout; a rank still running at the harness's deadline is killed and reported;
* the command line: ``torchrun --nproc-per-node 2 -m memlab train --model memoryplus --set values_parallel=2``.

Tolerances: outputs and slice gradients come out bit-identical (the same sums in the same order); weight gradients
differ by fp32 rounding (P partial dot products added instead of one), so they are held to 1e-5 relative; loss curves
to 1e-5 (measured: ≤ 1e-6 over 12 steps).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from memlab import ShardedValues
from memlab.lab import comm_model
from memlab.lab import parallel_checks
from memlab.lab.distributed import RanksFailed, run_ranks, start_ranks
from memlab.lab.train import load_checkpoint, train
from memlab.lab.values_parallel import parallel_for
from memlab.layers.sharded_values import WHY_NOT_HASH_TABLES
from memlab.reading.sharded_bag import column_range, column_split

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")

#: (rows, dim, bag, tokens per rank, duplicates, sparse)
SHAPES = [
    (50, 7, 5, [3, 4], True, False),      # 7 columns: 4 + 3
    (10, 16, 1, [0, 5], True, False),     # rank 0 owns no token; bags of one row
    (123, 33, 8, [7, 1], False, True),    # odd sizes, row-sparse gradient + RowSparseAdam
    (3, 2, 3, [2, 2], True, False),       # one column per rank, 3 rows: duplicates everywhere
    (64, 9, 4, [1, 0], True, True),       # rank 1 owns no token, sparse
    (257, 64, 16, [6, 6], True, False),   # even split
]
CASES = [dict(seed=i, rows=r, dim=d, bag=b, counts=c, duplicates=dup, sparse=sp)
         for i, (r, d, b, c, dup, sp) in enumerate(SHAPES)]
MEASURE = dict(heads=4, topk=8, dim=16, tokens_per_rank=10)


@pytest.fixture(scope="module")
def checks():
    return run_ranks(parallel_checks.check_suite, 2, (CASES, MEASURE), timeout_s=90, collective_timeout_s=30)


# ------------------------------------------------------------------------------------------------ no processes needed
def test_columns_split_like_tensor_split():
    assert column_split(7, 2) == (4, 3) and column_split(8, 4) == (2, 2, 2, 2) and column_split(1, 1) == (1,)
    assert [column_range(7, 2, r) for r in range(2)] == [(0, 4), (4, 7)]
    assert column_split(10, 3) == tuple(t.shape[1] for t in torch.zeros(1, 10).tensor_split(3, dim=1))
    with pytest.raises(ValueError, match="at least one column"):
        column_split(2, 3)


def test_comm_model_worked_numbers():
    """The paper's setting (8 H100s, 4 heads × top-32, d = 1024, bf16, int32 indices), by hand."""
    setting = comm_model.paper_setting()
    b = setting["bytes_per_token"]
    assert b["indices all-gather"] == 7 * 128 * 4 and b["weights all-gather"] == 7 * 128 * 2
    assert b["outputs all-to-all"] == 7 / 8 * 1024 * 2 and b["forward"] == 7168 and b["backward"] == 3584
    assert setting["tensor_parallel_ffn_bytes_per_token"]["forward"] == 2 * 7 * 1024 * 2 == 4 * 7168
    assert setting["exchange_forward_ns_per_token"] == pytest.approx(7168 / (8 * 450e9) * 1e9)
    assert setting["exchange_over_bag_read_forward"] == pytest.approx(7168 / 450 / (128 * 1024 * 2 / 3350))
    assert comm_model.memory_parallel_bytes_per_token(4, 32, 1024, 1)["total"] == 0


def test_why_not_hash_tables_quotes_the_model():
    block = comm_model.hash_block_bytes_per_token(1024, 8, index_bytes=4, weight_bytes=2, activation_bytes=2)
    read = comm_model.memory_parallel_bytes_per_token(4, 32, 1024, 8, index_bytes=4, weight_bytes=2,
                                                      activation_bytes=2)["forward"]
    assert block["forward"] == 25536 and block["pipeline boundary"] == 2048
    assert f"{block['forward'] / 1000:.1f} KB" in WHY_NOT_HASH_TABLES
    assert f"{block['forward'] / read:.1f}x" in WHY_NOT_HASH_TABLES
    assert f"{128 * 1024 * 1024 * 4 / 2**30:.1f} GB" in WHY_NOT_HASH_TABLES  # ML2 tables at d = 1024, τ + e = 10


def test_sharded_values_without_a_process_group_says_how_to_start_one():
    with pytest.raises(RuntimeError, match="torchrun"):
        ShardedValues(16, 8)


def test_values_parallel_without_torchrun_names_the_command():
    with pytest.raises(ValueError, match=re.escape("torchrun --nproc-per-node 2 -m memlab train")):
        parallel_for(2, torch.device("cpu"))


# ------------------------------------------------------------------------------------------------ the exchange
def test_sharded_read_equals_the_one_process_read(checks):
    for rank, results in enumerate(checks):
        for r in results["exchange"]:
            where = f"rank {rank}, case {r['seed']} (dim {r['dim']}, tokens {r['counts']})"
            assert r["out"] == 0.0, where                          # same sums, same order: bit-identical
            assert r["slice_grad"] == 0.0, where
            assert r["weights_grad"] <= 1e-5 * max(1.0, r["scale"]), where  # P partial dot products: fp32 rounding
            if r["sparse"]:
                assert r["adam_step"] == 0.0, where                # RowSparseAdam on the slice = on the whole table


def test_sharded_layers_equal_the_one_process_layers(checks):
    for rank, results in enumerate(checks):
        for kind, r in results["layers"].items():
            assert r["tables"] == (2 if kind == "peer" else 1)   # PEER: up- and down-rows
            for key in ("out", "x_grad", "dense_grads", "value_grads"):
                assert r[key] <= 1e-6, (rank, kind, key, r[key])


def test_the_exchange_reads_memoryformer_tables_too(checks):
    for rank, results in enumerate(checks):
        h = results["hash"]
        assert h["out"] == 0.0 and h["table_grad"] == 0.0 and h["x_grad"] <= 1e-6, (rank, h)


def test_row_sharding_reference_is_right_and_costs_more(checks):
    for results in checks:
        rv = results["row_vs_columns"]
        assert rv["rows"]["out"] <= 1e-6 and rv["rows"]["weights_grad"] <= 1e-5
        kw = dict(heads=4, topk=8, dim=64, ranks=2)
        col, row = comm_model.memory_parallel_bytes_per_token(**kw), comm_model.row_sharded_bytes_per_token(**kw)
        assert rv["columns"]["forward_bytes_per_token"] == col["forward"]
        assert rv["columns"]["backward_bytes_per_token"] == col["backward"]
        assert rv["rows"]["forward_bytes_per_token"] == row["forward"] > col["forward"]
        assert rv["rows"]["backward_bytes_per_token"] == row["backward"] > col["backward"]


def test_measured_bytes_equal_the_model(checks):
    """What each rank handed to the collectives, per token, against comm_model (fp32 weights and outputs)."""
    model = comm_model.memory_parallel_bytes_per_token(MEASURE["heads"], MEASURE["topk"], MEASURE["dim"], 2)
    for results in checks:
        m, n = results["measure"], MEASURE["tokens_per_rank"]
        assert m["forward"]["indices"] / n == model["indices all-gather"]
        assert m["forward"]["weights"] / n == model["weights all-gather"]
        assert m["forward"]["outputs"] / n == model["outputs all-to-all"]
        assert m["backward"]["outputs grad"] / n == model["output grads all-to-all"]
        assert m["backward"]["weights grad"] / n == model["weight grads reduce"]
        assert m["forward"]["token counts"] == 8  # one int64 to the other rank per read


# ------------------------------------------------------------------------------------------------ training
TINY = dict(model="memoryplus", d_model=32, n_layers=2, n_heads=2, seq_len=16, pkm_n_keys=8, pkm_heads=2,
            pkm_topk=4, pkm_v_dim=21)  # 21 value columns: 11 + 10


@pytest.fixture(scope="module")
def runs(tmp_path_factory, text_file):
    """One 1-rank run here; in one 2-rank session: a 2-rank run, a 2 → 2 resume, a 2 → 1 → 2 chain, and last a run
    whose rank 1 is killed at step 2 (rank 0 reports the error it got)."""
    out = tmp_path_factory.mktemp("runs")
    base = dict(out_dir=str(out), text=str(text_file), steps=12, batch_size=8, warmup_steps=2, eval_every=6,
                eval_batches=2, stats_every=6, ckpt_every=3, log_every=6, fact_entities=0)
    one = train(TINY, {**base, "name": "one"}, verbose=False)
    jobs = [
        dict(model=TINY, train={**base, "name": "two", "values_parallel": 2}),
        dict(model=TINY, train={**base, "name": "resumed", "values_parallel": 2, "stop_after": 5}),
        dict(model=TINY, train={**base, "name": "resumed", "values_parallel": 2}, resume=True),          # 2 → 2
        dict(model=TINY, train={**base, "name": "chain", "values_parallel": 2, "stop_after": 4}),
        dict(model=TINY, train={**base, "name": "chain", "values_parallel": 1, "stop_after": 8}, resume=True,
             only_rank0=True),                                                                           # 2 → 1
        dict(model=TINY, train={**base, "name": "chain", "values_parallel": 2}, resume=True),            # 1 → 2
    ]
    die = {**base, "name": "die", "values_parallel": 2, "eval_every": 50, "stats_every": 0, "ckpt_every": 50}
    start = time.perf_counter()
    outcomes = start_ranks(parallel_checks.train_jobs_then_die, 2, (jobs, TINY, die), timeout_s=150,
                           collective_timeout_s=30)
    if not outcomes[0].ok:
        raise RanksFailed(outcomes)
    two = outcomes[0].value["jobs"]
    return (out, one, {j["name"] + ("" if j["stopped_at"] is None else f"@{j['stopped_at']}"): j for j in two},
            outcomes, time.perf_counter() - start)


def test_two_ranks_follow_the_one_rank_loss_curve(runs):
    _, one, two, _, _ = runs
    a, b = [h["loss"] for h in one["history"]], two["two"]["losses"]
    assert len(a) == len(b) == 12
    assert max(abs(x - y) for x, y in zip(a, b)) <= 1e-5
    assert max(abs(x - y) for x, y in zip([e["val_loss"] for e in one["evals"]], two["two"]["val_losses"])) <= 1e-5


def test_resume_and_resharding_two_one_two(runs):
    out, one, two, _, _ = runs
    a = [h["loss"] for h in one["history"]]
    assert two["resumed"]["losses"] == two["two"]["losses"]  # 2 → 2: bit-identical, as a one-process resume is
    assert two["chain@4"]["losses"] == two["two"]["losses"][:4]
    chain = two["chain"]["losses"]                           # 2 ranks to step 4, 1 rank to 8, 2 ranks to 12
    assert len(chain) == 12 and max(abs(x - y) for x, y in zip(a, chain)) <= 1e-5
    files = sorted(p.name for p in (out / "chain").glob("checkpoint*"))
    assert files == ["checkpoint.pt", "checkpoint.values0of2.step12.pt", "checkpoint.values1of2.step12.pt"]


def test_a_two_rank_checkpoint_loads_whole_in_one_process(runs):
    out, _, _, _, _ = runs
    model, ckpt = load_checkpoint(out / "two")
    whole, _ = load_checkpoint(out / "one")
    assert "values_shards" not in ckpt and model.shared_values.weight.shape == (64, 21)
    diff = max((p - q).abs().max().item() for p, q in zip(model.state_dict().values(), whole.state_dict().values()))
    assert diff <= 1e-4  # twelve AdamW steps of fp32 rounding apart


# ------------------------------------------------------------------------------------------------ failure
def test_a_killed_rank_is_a_clear_error_not_a_hang(runs):
    _, _, _, (survivor, killed), _ = runs
    assert killed.exitcode == -9 and not killed.ok and "killed by signal 9" in killed.error
    death = survivor.value["death"]
    assert death["error"] is not None, "rank 0 finished training although rank 1 was dead"
    assert "another rank stopped, crashed or" in death["error"] and "rank 0 of 2" in death["error"], death["error"]
    assert death["noticed_after_s"] < 15  # a dead peer resets the connection: no waiting for the 30 s timeout
    with pytest.raises(RanksFailed, match="rank 1: was killed by signal 9"):
        raise RanksFailed([survivor, killed])


def test_a_hung_rank_is_a_timeout_error_not_a_wait(checks):
    """A rank that stops answering (sleeps 3.5 s) while the other reads through a group with a 2 s timeout: the reader
    gets an ExchangeError after ~2 s."""
    reader, sleeper = (c["hang"] for c in checks)
    assert "ExchangeError" in reader["error"] and "'token counts'" in reader["error"], reader
    assert 1.5 < reader["waited_s"] < 3.4 and sleeper["slept_s"] == 3.5


def test_a_rank_still_running_at_the_deadline_is_killed_and_reported():
    start = time.perf_counter()
    (outcome,) = start_ranks(time.sleep, 1, (600,), timeout_s=1.0)
    assert time.perf_counter() - start < 10
    assert outcome.timed_out and not outcome.ok and "did not finish within 1 s and was killed" in outcome.error


# ------------------------------------------------------------------------------------------------ the command line
def test_torchrun_trains_memoryplus_with_values_parallel(tmp_path, text_file):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "memlab", "train", "--model", "memoryplus", "--set", "values_parallel=2", "--steps", "4",
           "--name", "cli", "--text", str(text_file)]
    for key, value in {**TINY, "batch_size": 4, "eval_batches": 1, "fact_entities": 0, "stats_every": 0,
                       "out_dir": str(tmp_path)}.items():
        if key != "model":
            cmd += ["--set", f"{key}={value}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("val ppl") == 1  # rank 0 reports, rank 1 stays quiet
    run_dir = tmp_path / "cli"
    assert (run_dir / "checkpoint.values1of2.step4.pt").exists() and (run_dir / "results.json").exists()
    resumed = train(TINY, dict(out_dir=str(tmp_path), name="cli", text=str(text_file), steps=6, batch_size=4,
                               eval_batches=1, fact_entities=0, stats_every=0), resume=True, verbose=False)
    assert resumed["steps"] == 6                               # 2 → 1: resumes on one process
    assert not list(run_dir.glob("checkpoint.values*"))        # its one-process save dropped the old shards
