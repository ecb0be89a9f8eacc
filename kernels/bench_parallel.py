"""Memory parallelism on this machine: a Memory+ training step at 1 and 2 ranks, the bytes its exchange sends per token
against the model, and the paper's 8-GPU NVLink setting modelled — one run.

    python kernels/bench_parallel.py            # full: ~2 min on a 2-core CPU, writes kernels/results/parallel-<device>.json
    python kernels/bench_parallel.py --quick    # small sizes, ~30 s (process start-up dominates)

Measured (``memlab.lab.parallel_checks.step_timing`` in ranks started by ``memlab.lab.distributed.run_ranks``, gloo):
one training step of a ``MemoryPlus`` layer — forward, backward, the all-reduce of its replicated weights' gradients
(2 ranks), AdamW step — on a fixed global batch of tokens split over the ranks. Three configurations: 1 rank with 1
torch thread (one core), 1 rank with 2 threads (both cores, one process) and 2 ranks with 1 thread each, values
sharded by columns (``ShardedValues``). They alternate round by round and each reports its median step; the row keeps
the median over rounds. Wall time and each process's CPU time are both kept: on a shared machine another user's
work takes cores away, and wall time then says more about the machine than about the code, while CPU time still
shows how the work splits. The 2-thread process suffers most there: every parallel region waits for both threads,
and one of them is often descheduled. The value table is large enough (64 MB, plus its gradient and two Adam moments) that stepping it is a
real part of the step: each of 2 ranks steps half of it.

Bytes: what each rank handed to the exchange's collectives (``exchange_counter``, token counts excluded), per token it
owns, against ``memlab.lab.comm_model.memory_parallel_bytes_per_token`` (fp32 weights and outputs, int32 indices).
The exchange's seconds are wall time inside its collectives, waiting for the other rank included.

Modelled: ``memlab.lab.comm_model.paper_setting`` — 8 H100s over NVLink 4 (450 GB/s per direction per GPU, NVIDIA's
H100 datasheet), 4 heads × top-32, values of 1024 in bf16: bytes and bandwidth-bound time per token of the exchange
against the bag read it serves (HBM3, 3.35 TB/s) and a tensor-parallel FFN.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench import Log, bench_arguments, device_name, parse_bench_arguments, result_header, write_result  # noqa: E402

from memlab.lab import comm_model  # noqa: E402
from memlab.lab.distributed import run_ranks  # noqa: E402
from memlab.lab.parallel_checks import step_timing  # noqa: E402


def main(argv=None) -> int:
    ap = bench_arguments(__doc__.split("\n")[0], "small sizes (for a smoke test)", "directory for parallel-<device>.json")
    ap.add_argument("--rounds", type=int, default=None, help="rounds over the three configurations (default 3; 1 with --quick)")
    args = parse_bench_arguments(ap, argv)
    if args.quick:
        setting = dict(d_model=64, n_keys=32, heads=2, topk=4, tokens=64, steps=3, warmup=1)
    else:
        setting = dict(d_model=256, n_keys=256, heads=4, topk=32, tokens=1024, steps=7, warmup=2)
    rounds = args.rounds or (1 if args.quick else 3)
    configs = {"1 rank x 1 thread": (1, 1), "1 rank x 2 threads": (1, 2), "2 ranks x 1 thread": (2, 1)}
    log = Log()
    name = device_name()
    values_mb = setting["n_keys"] ** 2 * setting["d_model"] * 4 / 1e6
    log(f"device: {name}  torch {torch.__version__}  quick={args.quick}  rounds={rounds}")
    log(f"MemoryPlus(d={setting['d_model']}, n_keys={setting['n_keys']} → {setting['n_keys'] ** 2} values = "
        f"{values_mb:.0f} MB fp32, heads={setting['heads']}, topk={setting['topk']}), {setting['tokens']} tokens per "
        "step in all; " + ", ".join(configs) + " (gloo)")
    runs = {config: [] for config in configs}
    for i in range(rounds):
        for config, (world, threads) in configs.items():
            ranks = run_ranks(step_timing, world, tuple(setting.values()), timeout_s=600, collective_timeout_s=300,
                              threads=threads)
            runs[config].append(ranks)
            log(f"  round {i + 1}: {config}: step " + ", ".join(f"{r['step_s'] * 1e3:.1f}" for r in ranks) + " ms"
                + " (CPU " + ", ".join(f"{r['cpu_s'] * 1e3:.1f}" for r in ranks) + " ms)"
                + ("" if world == 1 else "; in the exchange " + ", ".join(f"{r['exchange_s'] * 1e3:.1f}"
                                                                       for r in ranks) + " ms"))
    step = {config: statistics.median(max(r["step_s"] for r in ranks) for ranks in runs[config]) for config in runs}
    cpu = {config: statistics.median(max(r["cpu_s"] for r in ranks) for ranks in runs[config]) for config in runs}
    two = runs["2 ranks x 1 thread"]
    exchange_s = statistics.median(max(r["exchange_s"] for r in ranks) for ranks in two)
    measured = [r["exchange_bytes"] / r["tokens_here"] for r in two[-1]]
    model = comm_model.memory_parallel_bytes_per_token(setting["heads"], setting["topk"], setting["d_model"], 2)
    sent = statistics.median(r["exchange_bytes"] for ranks in two for r in ranks)
    paper = comm_model.paper_setting()
    row = {
        "setting": setting, "values_MB_fp32": values_mb, "step_s": step, "cpu_s_busiest_rank": cpu,
        "speedup_2_ranks_vs": {config: step[config] / step["2 ranks x 1 thread"] for config in step},
        "exchange_s_per_step_2_ranks": exchange_s, "exchange_share_of_step": exchange_s / step["2 ranks x 1 thread"],
        "bytes_per_token": {"measured_per_rank": measured, "model": model["total"], "model_parts": model},
        "gloo_GBps_in_exchange": sent / exchange_s / 1e9,
        "collectives_per_step_2_ranks": two[-1][0]["collectives_per_step"],
        "rounds": {config: [[r["step_s"] for r in ranks] for ranks in runs[config]] for config in runs},
    }
    log("time per step (median over rounds, slowest rank): " + ", ".join(
        f"{config} {t * 1e3:.1f} ms" for config, t in step.items()) + "; 2 ranks are x" + ", x".join(
        f"{v:.2f} vs {k}" for k, v in row["speedup_2_ranks_vs"].items() if k != "2 ranks x 1 thread"))
    log("CPU time per step of the busiest rank (its own work, whatever else the machine runs): " + ", ".join(
        f"{config} {t * 1e3:.1f} ms" for config, t in cpu.items()))
    log(f"exchange: {exchange_s * 1e3:.1f} ms per step ({100 * row['exchange_share_of_step']:.0f} % of the 2-rank "
        f"step, {row['collectives_per_step_2_ranks']} collectives, {row['gloo_GBps_in_exchange']:.2f} GB/s while in "
        "them, waiting for the other rank included)")
    log(f"bytes per token per read (forward + backward): measured {', '.join(f'{m:.0f}' for m in measured)} "
        f"(ranks 0, 1), model {model['total']:.0f}")
    log(f"modelled, 8 H100s over NVLink ({paper['link_GBps_per_direction']:.0f} GB/s per direction), 4 × top-32, "
        f"d=1024, bf16: {paper['bytes_per_token']['forward']:.0f} B/token forward, "
        f"{paper['bytes_per_token']['backward']:.0f} backward; exchange {paper['exchange_forward_ns_per_token']:.2f} "
        f"ns/token vs bag read {paper['bag_read_forward_ns_per_token']:.2f} ns/token from HBM "
        f"({100 * paper['exchange_over_bag_read_forward']:.0f} %); a tensor-parallel FFN all-reduce "
        f"{paper['tensor_parallel_ffn_bytes_per_token']['forward']:.0f} B/token")
    payload = {
        **result_header(name, args.quick),
        "measured": "one MemoryPlus training step (forward, backward, replicated-gradient all-reduce, AdamW) at 1 rank "
                    "(1 and 2 threads) and 2 ranks (1 thread each, values sharded by columns, gloo); medians",
        "bytes": "per token each rank owns, handed to the exchange's collectives (token counts excluded)",
        "row": row, "paper_setting_modelled": paper, "log": log.lines,
    }
    write_result(args.out, "parallel-", name, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
