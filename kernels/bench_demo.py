"""The demo's training speed, repeated: MemoryFormer's and Memory+'s tokens/s as a multiple of dense's, ``--runs`` times.

    python kernels/bench_demo.py --runs 3    # ~6 min on a 2-core CPU, writes kernels/results/demo-<device>.json
    python kernels/bench_demo.py --quick     # the demo's fast sizes, seconds (tests use it with --out to a temp dir)

Each run is ``memlab.lab.demo.run_demo`` (what ``make demo`` trains: dense, MemoryFormer and Memory+ of the same depth
and width, 300 steps, into a temporary directory), so each gives both of the demo's speed figures:

* **side by side**: the trained models' training steps timed in interleaved rounds (``demo.measure_step_speed``), the
  figure the demo reports first;
* **whole runs**: tokens/s over each model's whole training run, the models one after another (minutes apart, so
  the machine's drift over minutes enters the ratio).

The file keeps every run's figures and, per ratio, the min and max over the runs. ``make demo`` measures them once.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

# bench.py only defines helpers at import (and sets TRITON_INTERPRET=0 if unset when there is no GPU)
from bench import bench_arguments, parse_bench_arguments, result_header, start_log, write_result  # noqa: E402

from memlab.lab import demo  # noqa: E402

BASELINE = "dense"


def speed_ratios(results: list[dict]) -> dict[str, dict[str, float]]:
    """{model: {"side_by_side": its tokens/s ÷ dense's, side by side; "whole_runs": the same over the whole runs}}."""
    by = {r["model"]: r for r in results}
    base = by[BASELINE]
    return {name: {"side_by_side": r["tokens_per_s_side_by_side"] / base["tokens_per_s_side_by_side"],
                   "whole_runs": r["tokens_per_s"] / base["tokens_per_s"]}
            for name, r in by.items() if name != BASELINE}


def main(argv=None) -> int:
    ap = bench_arguments(__doc__.split("\n")[0], "the demo's fast sizes, seconds (for tests)",
                         "directory for demo-<device>.json", runs=3)
    args = parse_bench_arguments(ap, argv)
    log, name = start_log(args)
    runs = []
    for i in range(args.runs):
        load_before = os.getloadavg()
        with tempfile.TemporaryDirectory(prefix="memlab-bench-demo-") as out:
            results = demo.run_demo(fast=args.quick, out_dir=out, verbose=False)
        ratios = speed_ratios(results)
        runs.append({"load_average_before": list(load_before), "ratios_to_dense": ratios,
                     "tokens_per_s": {r["model"]: r["tokens_per_s"] for r in results},
                     "tokens_per_s_side_by_side": {r["model"]: r["tokens_per_s_side_by_side"] for r in results},
                     "steps": {r["model"]: r["steps"] for r in results}})
        log(f"run {i + 1} of {args.runs} (load {load_before[0]:.2f}): " + "   ".join(
            f"{model} x{r['side_by_side']:.2f} of dense side by side, x{r['whole_runs']:.2f} over the whole runs"
            for model, r in ratios.items()))
    spread = {f"{model} | {kind}": {"min": min(r["ratios_to_dense"][model][kind] for r in runs),
                                    "max": max(r["ratios_to_dense"][model][kind] for r in runs),
                                    "values": [r["ratios_to_dense"][model][kind] for r in runs]}
              for model in runs[0]["ratios_to_dense"] for kind in ("side_by_side", "whole_runs")}
    for key, s in spread.items():
        log(f"{key:32s} tokens/s ÷ dense tokens/s: {s['min']:.2f}–{s['max']:.2f} over {args.runs} runs")
    payload = {**result_header(name, args.quick), "what": "memlab.lab.demo.run_demo, --runs times",
               "speed_rounds": demo.FAST_SPEED_ROUNDS if args.quick else demo.SPEED_ROUNDS,
               "runs": runs, "spread": spread, "log": log.lines}
    write_result(args.out, "demo-", name, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
