"""``make demo`` / ``python -m memlab demo``: dense vs MemoryFormer vs Memory+ tiny LMs, trained side by side.

All three share depth, width, context, batch, steps, seed and data (the offline python-docs corpus with synthetic
facts mixed in). One table comes out — parameters (total / active per token), lookup-memory MB, FLOPs per token,
training tokens/s, validation perplexity, fact recall — and ``loss_curves.png`` next to ``results.json``/``.csv`` in
``runs/demo/``. The numbers are what this machine produced; the closing notes say where the papers' claims do and do
not show at this scale.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import data as data_lib
from . import tables
from .env import fast_mode
from .models import ModelConfig
from .plots import style_axes
from .io import atomic_write_text
from .timing import time_side_by_side
from .train import TrainConfig, build_run, train, train_step

DEMO_MODELS = ("dense", "memoryformer", "memoryplus")

#: Shared architecture: 4 layers of width 128, 4 heads, 128-byte context. MemoryFormer uses τ = 8 (K = 16 tables)
#: and e = 2; Memory+ replaces the FFN of the centre layer (layer 2) with 64² = 4096 shared values, 4 heads, top-8.
BASE_MODEL = dict(d_model=128, n_layers=4, n_heads=4, seq_len=128, tau=8, expand_bits=2,
                  pkm_n_keys=64, pkm_heads=4, pkm_topk=8)
BASE_TRAIN = dict(steps=300, batch_size=16, lr=3e-3, warmup_steps=30, eval_every=50, eval_batches=8,
                  stats_every=50, ckpt_every=100, log_every=50, fact_entities=50, fact_fraction=0.25)
FAST_MODEL = dict(d_model=64, n_layers=2, n_heads=2, seq_len=64, tau=8, expand_bits=1, pkm_n_keys=16, pkm_topk=4)
FAST_TRAIN = dict(steps=20, batch_size=8, warmup_steps=4, eval_every=10, eval_batches=2, stats_every=10,
                  ckpt_every=20, log_every=10, fact_entities=20)
#: The demo trains MemoryFormer's tables with row-sparse gradients and lazy AdamW (memlab.RowSparseAdam): at this size
#: it trains ~1.5× faster than dense AdamW over every table row, and the ``lazy-adam`` study (3 seeds of this very
#: run) found no perplexity difference (AdamW 12.05 ± 0.12, lazy 12.03 ± 0.21, 95 % CIs). Not the paper's optimizer:
#: ``python -m memlab train`` keeps AdamW unless ``--set table_optimizer=lazy``. No effect on models without tables.
DEMO_TABLE_OPTIMIZER = "lazy"


#: The capacity probe (notebook 07): dense-tiny and Memory+ of the ``capacity`` study trained for a short while on a
#: small knowledge base (fact lines only). N = 100 entities (3 200 bits) is far below dense-tiny's capacity, so the
#: probe shows whether facts get stored at all in a demo's budget, not a capacity difference: that is the study's job.
CAPACITY_PROBE_MODELS = ("dense", "memoryplus")
CAPACITY_PROBE = dict(knowledge_entities=100, exposures=300)
FAST_CAPACITY_PROBE = dict(knowledge_entities=12, exposures=4)


def capacity_probe_configs(fast: bool = False, out_dir: str = "runs/demo",
                           seconds_per_model: float | None = 60.0) -> tuple[dict, dict]:
    """Model and train configs of the capacity probe, keyed by model name (the ``capacity`` study's, at small N)."""
    from . import knowledge
    from .studies import CAPACITY_MODEL, CAPACITY_TRAIN

    probe = FAST_CAPACITY_PROBE if fast else CAPACITY_PROBE
    n = probe["knowledge_entities"]
    steps = knowledge.steps_for_exposures(probe["exposures"], n, CAPACITY_MODEL["seq_len"],
                                          CAPACITY_TRAIN["batch_size"])
    models, trains = {}, {}
    for name in CAPACITY_PROBE_MODELS:
        models[name] = ModelConfig.from_dict({**CAPACITY_MODEL, "model": name})
        trains[name] = TrainConfig.from_dict({
            **CAPACITY_TRAIN, "knowledge_entities": n, "steps": steps, "name": f"capacity-{name}", "out_dir": out_dir,
            "max_seconds": seconds_per_model, "eval_every": max(1, steps // 4), "log_every": max(1, steps // 4),
            "ckpt_every": steps, "knowledge_heldout": 16 if fast else 64})
    return models, trains


def run_capacity_probe(fast: bool | None = None, out_dir: str = "runs/demo", seconds_per_model: float | None = 60.0,
                       verbose: bool = True) -> list[dict]:
    """Train the capacity probe's models one after the other; returns their results (``kb_*`` metrics).

    One torch thread, as the capacity study's workers use: at width 32 a step is too small to split, and a second
    thread only waits at every barrier (several times slower on a busy 2-core machine)."""
    import torch

    fast = fast_mode() if fast is None else fast
    models, trains = capacity_probe_configs(fast, out_dir, seconds_per_model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [train(models[name], trains[name], verbose=verbose) for name in CAPACITY_PROBE_MODELS]
    finally:
        torch.set_num_threads(threads)


#: The capacity probe's table: (header, key, format).
CAPACITY_COLUMNS = [
    ("model", "model", ""),
    ("params", "params_total", ","),
    ("FLOPs/token", "flops_per_token", ","),
    ("exposures", "kb_exposures", ".0f"),
    ("rank acc", "kb_rank_acc", ".1%"),
    ("exact", "kb_exact", ".1%"),
    ("bits stored", "kb_bits", ",.0f"),
    ("of", "kb_bits_max", ",.0f"),
    ("held-out acc", "kb_heldout_rank_acc", ".1%"),
]


def capacity_table(results: list[dict]) -> str:
    headers = [header for header, _, _ in CAPACITY_COLUMNS]
    rows = [{header: r[key] for header, key, _ in CAPACITY_COLUMNS if key in r} for r in results]
    return tables.format_table(rows, headers, formats={h: spec for h, _, spec in CAPACITY_COLUMNS},
                               left_aligned=["model"])


def above_chance(result: dict, sigmas: float = 3.0) -> bool:
    """Ranking accuracy beyond ``sigmas`` binomial standard errors above chance (1/V) over the run's facts."""
    p, n = result["kb_chance"], result["kb_facts"]
    return result["kb_rank_acc"] > p + sigmas * (p * (1 - p) / n) ** 0.5


def capacity_observations(results: list[dict]) -> list[str]:
    """What the capacity probe shows, derived from its numbers, and where the capacity study is."""
    if not results:
        return []
    chance = results[0]["kb_chance"]
    n = results[0]["kb_entities"]
    pointer = ("the capacity study — bits stored against N at matched FLOPs, with its pre-registered claim — is "
               "notebook 07 (make capacity; results in data/capacity).")
    if not any(above_chance(r) for r in results):
        exposures = ", ".join(f"{r['model']} {r['kb_exposures']:.0f}" for r in results)
        return [f"Capacity probe: no model ranked the facts above chance ({chance:.1%}, by 3 binomial standard "
                f"errors) on {n} entities in its time budget (exposures per fact: {exposures}). Tiny models store "
                "facts only after a plateau of ~150 exposures, more than a demo affords, so no capacity difference "
                "can be shown here; " + pointer]
    parts = ", ".join(f"{r['model']} {r['kb_bits']:,.0f} bits ({r['kb_rank_acc']:.0%} ranked first)" for r in results)
    return [f"Capacity probe ({n} entities, {results[0]['kb_bits_max']:,.0f} bits, chance {chance:.1%}): {parts}. "
            "N is far below dense-tiny's capacity, so this shows facts being stored, not a capacity difference; "
            + pointer]


def demo_configs(fast: bool = False, steps: int | None = None, out_dir: str = "runs/demo",
                 seconds_per_model: float | None = None) -> tuple[dict[str, ModelConfig], dict[str, TrainConfig]]:
    """The demo's model and train configs, keyed by model name."""
    model_base, train_base = (FAST_MODEL, FAST_TRAIN) if fast else (BASE_MODEL, BASE_TRAIN)
    models, trains = {}, {}
    for name in DEMO_MODELS:
        models[name] = ModelConfig.from_dict({**model_base, "model": name})
        t = {**train_base, "name": name, "out_dir": out_dir, "max_seconds": seconds_per_model,
             "table_optimizer": DEMO_TABLE_OPTIMIZER}
        if steps is not None:
            t["steps"] = steps
        trains[name] = TrainConfig.from_dict(t)
    return models, trains


#: The demo table's columns: (header, key in a run's results, format spec).
COLUMNS = [
    ("model", "model", ""),
    ("params", "params_total", ","),
    ("active", "params_active", ","),
    ("memory MB", "memory_mb", ".1f"),
    ("FLOPs/token", "flops_per_token", ","),
    ("tokens/s", "tokens_per_s", ",.0f"),
    ("val ppl", "val_ppl", ".2f"),
    ("fact recall", "fact_recall", ".1%"),
    ("held-out QA", "fact_qa_heldout", ".1%"),
]
CSV_COLUMNS = [key for _, key, _ in COLUMNS] + ["steps", "tokens_trained", "train_seconds", "val_loss", "fact_chance",
                                                "stopped_early", "tokens_per_s_side_by_side"]


def results_table(results: list[dict]) -> str:
    """The runs (one row each) as a text table in ``COLUMNS`` order; a metric a run lacks shows as "—"."""
    headers = [header for header, _, _ in COLUMNS]
    rows = [{header: r[key] for header, key, _ in COLUMNS if key in r} for r in results]
    formats = {header: spec for header, _, spec in COLUMNS}
    return tables.format_table(rows, headers, formats=formats, left_aligned=["model"])




def results_csv(results: list[dict]) -> str:
    return tables.csv_text(results, CSV_COLUMNS)


def plot_loss_curves(results: list[dict], path: str | Path | None = None, smooth: int = 10):
    """Training loss (moving average over ``smooth`` steps) and validation loss vs step for every run."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        steps = [h["step"] for h in r["history"]]
        losses = [h["loss"] for h in r["history"]]
        k = max(1, min(smooth, len(losses)))
        avg = [sum(losses[max(0, i - k + 1): i + 1]) / len(losses[max(0, i - k + 1): i + 1]) for i in range(len(losses))]
        (line,) = ax.plot(steps, avg, label=f"{r['model']} train")
        ax.plot([e["step"] for e in r["evals"]], [e["val_loss"] for e in r["evals"]], "o--", color=line.get_color(),
                label=f"{r['model']} val")
    style_axes(ax, "step", "cross-entropy (nats / byte)", "tiny LMs on the python-docs corpus")
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def plot_ppl_vs_flops(results: list[dict]):
    """Validation perplexity against forward FLOPs per token (log x): where each model sits on the cost axis."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for r in results:
        ax.scatter(r["flops_per_token"], r["val_ppl"], s=40)
        ax.annotate(r["model"], (r["flops_per_token"], r["val_ppl"]), textcoords="offset points", xytext=(5, 4))
    ax.set_xscale("log")
    ax.set_xlabel("forward FLOPs per token (multiply-adds)")
    ax.set_ylabel("validation perplexity (per byte)")
    ax.set_title("perplexity against cost (one seed per model)")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def usage_series(result: dict, statistic: str = "fraction_used") -> dict[str, tuple[list[int], list[float]]]:
    """{memory layer: (steps, values of ``statistic``)} from a run's logged usage statistics."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for entry in result.get("usage", []):
        for layer, summary in entry["layers"].items():
            steps, values = series.setdefault(layer, ([], []))
            steps.append(entry["step"])
            values.append(summary[statistic])
    return series


def observations(results: list[dict]) -> list[str]:
    """Plain statements comparing the runs with the papers' claims, derived from the numbers (not asserted)."""
    by = {r["model"]: r for r in results}
    notes = []
    d, mf, mp = by.get("dense"), by.get("memoryformer"), by.get("memoryplus")
    if d and mf:
        ratio = mf["flops_per_token"] / d["flops_per_token"]
        notes.append(
            f"MemoryFormer needs {ratio:.0%} of dense FLOPs/token ({mf['flops_per_token']:,} vs {d['flops_per_token']:,}) "
            f"but stores {mf['memory_mb']:.0f} MB of tables ({mf['params_total'] / d['params_total']:.0f}× the parameters)."
        )
        if "tokens_per_s_side_by_side" in mf and "tokens_per_s_side_by_side" in d:
            speed = (f"MemoryFormer trains at {mf['tokens_per_s_side_by_side'] / d['tokens_per_s_side_by_side']:.2f}× "
                     f"dense tokens/s, its training steps timed side by side with dense's after training (medians of "
                     f"{mf['speed_rounds']} interleaved rounds; over the whole runs, one after the other, "
                     f"{mf['tokens_per_s'] / d['tokens_per_s']:.2f}×, which the machine's drift over minutes blurs)")
        else:
            speed = f"MemoryFormer trains at {mf['tokens_per_s'] / d['tokens_per_s']:.2f}× dense tokens/s"
        notes.append(
            f"Training speed on this machine: {speed}. FLOPs are not time on a CPU. Profiled at this size: with dense "
            "AdamW the optimizer update of every table row was ~30 % of a MemoryFormer step, hence the demo's "
            "row-sparse tables and lazy AdamW; the row gathers and their backward are most of the rest."
        )
        behind = mf["val_ppl"] > d["val_ppl"]
        notes.append(
            f"Perplexity: MemoryFormer {mf['val_ppl']:.2f} vs dense {d['val_ppl']:.2f}. The paper reports MemoryFormer "
            "ahead of its Pythia baseline at equal width (Table 1, d = 512: 0.404 vs 0.375 average zero-shot accuracy)"
            + ("; that does not replicate at this size and training length." if behind
               else "; this run agrees in direction.")
        )
    if d and mp:
        better = mp["val_ppl"] < d["val_ppl"]
        notes.append(
            f"Memory+: val ppl {mp['val_ppl']:.2f} vs dense {d['val_ppl']:.2f} with "
            f"{mp['params_total'] / d['params_total']:.1f}× the parameters and {mp['flops_per_token'] / d['flops_per_token']:.0%} "
            "of the FLOPs/token "
            + ("(better, the direction the paper finds at scale)." if better else
               "(not better: the paper's gains need far larger memories and training runs than this demo).")
        )
        if "fact_recall" in d and "fact_recall" in mp:
            chance = d.get("fact_chance", 0.0)
            if max(mp["fact_recall"], d["fact_recall"]) <= 2 * chance:
                notes.append(
                    f"Fact recall: Memory+ {mp['fact_recall']:.1%} vs dense {d['fact_recall']:.1%}, both within 2× of "
                    f"chance ({chance:.1%}): no measurable fact storage at this scale, so the paper's factual-QA "
                    "advantage can be neither confirmed nor refuted here."
                )
            else:
                more = mp["fact_recall"] > d["fact_recall"]
                notes.append(
                    f"Fact recall: Memory+ {mp['fact_recall']:.1%} vs dense {d['fact_recall']:.1%} (chance {chance:.1%}) "
                    + ("— more facts stored, the direction of the paper's NQ/TriviaQA result."
                       if more else "— the paper's factual-QA advantage does not show at this scale.")
                )
    if d and "fact_chance" in d:
        notes.append(
            f"Held-out QA asks questions never seen in that form (chance {d['fact_chance']:.1%}); scores near chance "
            "mean no transfer from statements to questions at this scale."
        )
    return notes


#: Rounds of ``measure_step_speed``: each round times one training step of every model, in shuffled order.
SPEED_ROUNDS, FAST_SPEED_ROUNDS = 15, 3


def measure_step_speed(models: dict[str, ModelConfig], trains: dict[str, TrainConfig], corpus,
                       rounds: int = SPEED_ROUNDS) -> dict[str, float]:
    """Median seconds per training step of each trained model, measured side by side.

    The models train one after the other, minutes apart, and a shared machine's speed drifts over minutes (three
    runs of ``kernels/bench_demo.py``: MemoryFormer ÷ dense tokens/s over the whole runs 1.28–1.79×, side by side
    1.25–1.36×; ``kernels/README.md``). So each model is restored from its checkpoint (weights and optimizer state at the end of
    training: the hash tables' row usage, hence the row-sparse update's size, is the trained one) and
    ``memlab.lab.timing.time_side_by_side`` times one ``train_step`` of each per round, interleaved. The steps train
    on (nothing is saved: the checkpoints stay as training left them)."""
    runs = {name: build_run(models[name], trains[name], resume=True, verbose=False, corpus=corpus) for name in models}
    return time_side_by_side({name: (lambda run=run: train_step(run)) for name, run in runs.items()},
                             rounds=rounds, min_time_per_round=0.0, warmup=2)


def run_demo(fast: bool | None = None, steps: int | None = None, out_dir: str = "runs/demo",
             seconds_per_model: float | None = 150.0, verbose: bool = True) -> list[dict]:
    """Train the three demo models one after the other, time their training steps side by side
    (``measure_step_speed``), and write results.json, results.csv and loss_curves.png."""
    fast = fast_mode() if fast is None else fast
    models, trains = demo_configs(fast, steps, out_dir, seconds_per_model)
    corpus = data_lib.load_corpus(verbose=verbose)
    results = [train(models[name], trains[name], verbose=verbose, corpus=corpus) for name in DEMO_MODELS]
    rounds = FAST_SPEED_ROUNDS if fast else SPEED_ROUNDS
    step_seconds = measure_step_speed(models, trains, corpus, rounds)
    for r in results:
        r["speed_rounds"], r["step_s_side_by_side"] = rounds, step_seconds[r["model"]]
        r["tokens_per_s_side_by_side"] = trains[r["model"]].batch_size * models[r["model"]].seq_len / step_seconds[
            r["model"]]
    out = Path(out_dir)
    slim = [{k: v for k, v in r.items() if k not in ("history", "usage")} for r in results]
    atomic_write_text(out / "results.json", json.dumps(slim, indent=1) + "\n")
    atomic_write_text(out / "results.csv", results_csv(results))
    if "matplotlib.pyplot" not in sys.modules:  # command line: no display needed (notebooks keep their backend)
        import matplotlib
        matplotlib.use("Agg")
    fig = plot_loss_curves(results, out / "loss_curves.png")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fast", action="store_true", help="tiny sizes, seconds (also MEMLAB_FAST=1)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model (default 300)")
    parser.add_argument("--seconds-per-model", type=float, default=150.0,
                        help="stop a model's training early past this many seconds (keeps make demo < 10 min)")
    parser.add_argument("--capacity-seconds", type=float, default=60.0,
                        help="training seconds per model of the capacity probe (0 skips it; notebook 07 has the study)")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--quiet", action="store_true")


def run(args) -> int:
    start = time.perf_counter()
    results = run_demo(fast=args.fast or None, steps=args.steps, out_dir=args.out,
                       seconds_per_model=args.seconds_per_model, verbose=not args.quiet)
    print()
    print(results_table(results))
    print()
    for note in observations(results):
        print(f"- {note}")
    early = [r["model"] for r in results if r.get("stopped_early")]
    if early:
        print(f"- stopped early by the time budget: {', '.join(early)} (compare their steps in results.csv)")
    if args.capacity_seconds > 0:
        probe = run_capacity_probe(fast=args.fast or None, out_dir=args.out, seconds_per_model=args.capacity_seconds,
                                   verbose=not args.quiet)
        slim = [{k: v for k, v in r.items() if k.startswith("kb_") or k in ("model", "params_total",
                                                                             "flops_per_token", "steps")}
                for r in probe]
        atomic_write_text(Path(args.out) / "capacity.json", json.dumps(slim, indent=1) + "\n")
        print("\ncapacity probe: facts stored after a short run on a knowledge base (notebook 07)")
        print(capacity_table(probe))
        for note in capacity_observations(probe):
            print(f"- {note}")
    extra = ", capacity.json" if args.capacity_seconds > 0 else ""
    print(f"\nwrote {args.out}/results.json, results.csv, loss_curves.png{extra}  "
          f"({time.perf_counter() - start:.0f} s total)")
    return 0
