"""Reading the factual-capacity study (notebook 07): the committed results, a summary per (architecture, N), the
verdict on the pre-registered claim, the figures, and the notebook's fact-and-rows view.

    capacity_dir / load_capacity / load_details   data/capacity/capacity.csv and capacity.details.json (``make
                                                  capacity`` writes them with ``--export``; committed)
    summary               mean ± 95 % t-CI over seeds of the ``kb_*`` metrics, one row per (arch, N)
    dense_saturation      the N from which dense-tiny's stored bits stop growing; saturation_kind: why
    verdict               the pre-registered claim, decided from the numbers (Welch CIs, ``verdicts.compare``)
    plot_capacity         bits (or accuracy, bits per parameter) against N, one line per architecture
    fact_view             one run's per-attribute scores and the memory rows its prompts read (the widget's update)
    export_curves / load_curves / plot_curves
                          training loss against exposures, per run (``capacity.curves.csv``): when each seed leaves
                          its plateau, which decides what it stores at the edge of the budget

The task and the probe are in ``knowledge.py``; the study's design in ``studies.py`` (``capacity``).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .sweep import summarize
from .verdicts import compare

STUDY = "capacity"
#: The pre-registered thresholds: dense has saturated at N when doubling N adds less than ``SATURATION_GROWTH`` − 1
#: of its bits; the claim is that a memory model then stores ``CLAIM_RATIO`` × dense's bits at ≤ ``FLOPS_SLACK`` ×
#: dense's FLOPs per token.
SATURATION_GROWTH = 1.25
CLAIM_RATIO = 1.5
FLOPS_SLACK = 1.05
#: Ranking accuracy at the saturation N above which dense-tiny counts as having learned the task (``saturation_kind``).
LEARNED = 0.5
MEMORY_ARCHS = ("pkm", "memoryplus", "peer")
HOLDS, FAILS = "claim holds", "claim fails (null result)"
OVERLAP, FEW_SEEDS, NO_DATA, NO_SATURATION = ("inconclusive (CIs overlap)", "inconclusive (fewer than 2 seeds)",
                                              "no data", "dense did not saturate in the sweep")
METRICS = ("kb_bits", "kb_rank_acc", "kb_exact", "kb_bits_per_param", "kb_bits_per_active_param", "kb_exposures",
           "kb_heldout_rank_acc", "kb_zeroed_rank_acc", "kb_rows_hit_fraction", "flops_per_token", "params_total")


def capacity_dir() -> Path:
    """``$MEMLAB_CAPACITY`` if set, else ``data/capacity`` of the memlab checkout this package lives in."""
    if os.environ.get("MEMLAB_CAPACITY"):
        return Path(os.environ["MEMLAB_CAPACITY"])
    return Path(__file__).resolve().parents[2] / "data" / "capacity"


def _read_points_csv(folder: str | os.PathLike | None, name: str):
    """``folder/name`` (default folder: ``capacity_dir()``) with ``arch`` and ``N`` columns parsed from the point
    label "arch, N=…"; None if there is no such file."""
    import pandas as pd

    path = Path(folder if folder is not None else capacity_dir()) / name
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    parts = df["point"].astype(str).str.split(", N=", n=1, expand=True)
    return df.assign(arch=parts[0], N=parts[1].astype(int))


def load_capacity(folder: str | os.PathLike | None = None):
    """The committed results as a DataFrame with ``arch`` and ``N`` columns (from the point label "arch, N=…"),
    one row per (point, seed), pending points included; None if there is no CSV."""
    return _read_points_csv(folder, f"{STUDY}.csv")


def load_details(folder_or_file: str | os.PathLike | None = None) -> dict:
    """``<study>.details.json`` ({key: {point, seed, model, kb_* …, details}}); {} if absent."""
    path = Path(folder_or_file if folder_or_file is not None else capacity_dir())
    path = path / f"{STUDY}.details.json" if path.is_dir() or not path.suffix else path
    return json.loads(path.read_text()) if path.is_file() else {}


def progress(df) -> dict:
    """{"ok", "failed", "pending", "planned"} run counts of the study's latest invocation."""
    counts = df["status"].value_counts().to_dict() if df is not None and len(df) else {}
    done = {k: int(counts.get(k, 0)) for k in ("ok", "failed", "pending")}
    return {**done, "planned": sum(done.values())}


def summary(df, metrics=METRICS):
    """Mean ± 95 % t-CI over seeds, one row per (arch, N), finished runs only (``sweep.summarize``)."""
    ok = df[df["status"] == "ok"]
    return summarize(ok, by=["arch", "N"], metrics=[m for m in metrics if m in ok.columns]).sort_values(["arch", "N"])


def _bits(df, arch: str, n: int) -> list[float]:
    rows = df[(df["status"] == "ok") & (df["arch"] == arch) & (df["N"] == n)]
    return [float(v) for v in rows["kb_bits"].dropna()]


def dense_saturation(df, arch: str = "dense") -> int | None:
    """The smallest N of the sweep from which ``arch``'s mean stored bits grow by less than ``SATURATION_GROWTH``×
    at the next N (None: it kept growing, or there are fewer than two finished N)."""
    means = {}
    for n in sorted(df.loc[df["arch"] == arch, "N"].unique()):
        bits = _bits(df, arch, int(n))
        if bits:
            means[int(n)] = sum(bits) / len(bits)
    ns = sorted(means)
    for a, b in zip(ns, ns[1:]):
        if means[a] > 0 and means[b] < SATURATION_GROWTH * means[a]:
            return a
    return None


def saturation_kind(df, n_sat: int | None, arch: str = "dense") -> str | None:
    """Why ``arch``'s bits stopped growing at ``n_sat``: "parameters" when it ranks at least ``LEARNED`` of the facts
    of N = n_sat first (it had learned the task and ran out of room), else "exposures" (it had not finished learning
    even N = n_sat in the study's exposures: a limit of training, not of capacity). None without a saturation N."""
    if n_sat is None:
        return None
    rows = df[(df["status"] == "ok") & (df["arch"] == arch) & (df["N"] == n_sat)]["kb_rank_acc"].dropna()
    return "parameters" if len(rows) and rows.mean() >= LEARNED else "exposures"


def verdict(df) -> list[dict]:
    """The pre-registered claim, per memory architecture: at every N ≥ dense's saturation N, is mean(memory bits) −
    1.5 · mean(dense bits) > 0 beyond seed noise (its Welch 95 % CI above 0, ``verdicts.compare``), at no more than
    5 % more FLOPs per token? Points with fewer than 2 seeds on a side give "inconclusive (fewer than 2 seeds)".
    Returns one dict per (arch, N): arch, N, ratio (of means), low, high (the CI of the margin), verdict; a single
    row with N = None when dense never saturates or has no data."""
    rows = []
    n_sat = dense_saturation(df)
    for arch in MEMORY_ARCHS:
        if not (df["arch"] == arch).any():
            continue
        if n_sat is None:
            rows.append({"arch": arch, "N": None, "ratio": math.nan, "low": math.nan, "high": math.nan,
                         "verdict": NO_SATURATION if (df["arch"] == "dense").any() else NO_DATA})
            continue
        for n in sorted(int(v) for v in df.loc[df["arch"] == arch, "N"].unique() if v >= n_sat):
            memory, dense = _bits(df, arch, n), _bits(df, "dense", n)
            if not memory or not dense:
                rows.append({"arch": arch, "N": n, "ratio": math.nan, "low": math.nan, "high": math.nan,
                             "verdict": NO_DATA})
                continue
            c = compare(memory, [CLAIM_RATIO * d for d in dense], lower_better=False)
            flops = df[(df["arch"].isin([arch, "dense"])) & (df["N"] == n)].groupby("arch")["flops_per_token"].mean()
            ratio = (sum(memory) / len(memory)) / (sum(dense) / len(dense)) if sum(dense) > 0 else math.inf
            if flops[arch] > FLOPS_SLACK * flops["dense"]:
                decided = f"not comparable ({flops[arch] / flops['dense']:.2f}× dense FLOPs)"
            elif math.isnan(c.low):
                decided = FEW_SEEDS
            else:
                decided = HOLDS if c.low > 0 else FAILS if c.high < 0 else OVERLAP
            rows.append({"arch": arch, "N": n, "ratio": ratio, "low": c.low, "high": c.high, "verdict": decided})
    return rows


def plot_capacity(df, metric: str = "kb_bits", ax=None, reference_params: int | None = None, title: str = ""):
    """``metric`` against N (log-log for bits), one line per architecture: mean ± 95 % t-CI over seeds (no bar where
    a point has one seed). For ``kb_bits`` also the information in the knowledge base (N · 32 bits) and, given
    ``reference_params`` (dense-tiny's), its capacity at 1 and 2 bits per parameter. Returns the axes."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4))
    s = summary(df, metrics=[metric])
    for i, (arch, part) in enumerate(s.groupby("arch", sort=False)):
        ax.errorbar(part["N"], part[f"{metric}_mean"], yerr=np.nan_to_num(part[f"{metric}_ci"].to_numpy(float)),
                    fmt="o-", capsize=3, lw=1.4, color=f"C{i}", label=arch)
    if metric == "kb_bits":
        ns = np.array(sorted(df["N"].unique()), dtype=float)
        per_entity = float(df["kb_bits_max"].dropna().iloc[0] / df["kb_entities"].dropna().iloc[0]) \
            if df["kb_bits_max"].notna().any() else 32.0
        ax.plot(ns, per_entity * ns, "k:", lw=1, label="all facts (N · A · log2 V)")
        if reference_params:
            for k, style in ((1, "--"), (2, "-.")):
                ax.axhline(k * reference_params, color="0.5", ls=style, lw=1, label=f"dense-tiny at {k} bit/param")
        ax.set_yscale("symlog", linthresh=100)
    ax.set_xscale("log")
    ns = sorted(int(n) for n in df["N"].unique())  # every planned N, finished or not: the sweep's range
    ax.set_xticks(ns, [f"{n:,}" for n in ns])
    ax.minorticks_off()
    ax.set_xlim(ns[0] / 1.25, ns[-1] * 1.25)
    ax.set_xlabel("N entities")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(title or f"{metric} against N (mean ± 95 % CI over seeds)", fontsize=10)
    return ax


def fact_view(records: dict, model: str, n_entities: int, seed: int | None = None) -> dict:
    """What the notebook's widget shows for one (architecture, N): the run's per-attribute scores and its sampled facts
    with the memory rows each prompt reads. ``records``: ``load_details``' dict (``arch`` is matched against the point
    label, so "dense-10x" works too). Returns {"found", "text", "per_attribute" (list of dicts), "facts" (list of
    dicts), "shared_rows"}; "found" False, with a one-line text naming what exists, when no run matches."""
    def arch_of(record):
        return str(record.get("point", "")).split(", N=")[0] or record.get("model")

    runs = [r for r in records.values() if arch_of(r) == model and r.get("kb_entities") == n_entities
            and (seed is None or r.get("seed") == seed)]
    if not runs:
        have = sorted({(arch_of(r), r.get("kb_entities")) for r in records.values()})
        return {"found": False, "text": f"no finished run of {model} at N = {n_entities}; finished: "
                                         + (", ".join(f"{m} N={n}" for m, n in have) or "none"),
                "per_attribute": [], "facts": [], "shared_rows": {}}
    run = sorted(runs, key=lambda r: r.get("seed", 0))[0]
    details = run["details"]
    facts = []
    for s in details["sample"]:
        rows = "  ".join(f"{name.split('.')[-1]}@{name.split('.')[0][5:]}: {' '.join(map(str, r))}"
                         for name, r in s["rows"].items())
        facts.append({"entity": s["entity"], "attribute": s["attribute"], "value": s["value"],
                      "greedy": s["greedy"] or "—", "correct": s["greedy"] == s["value"], "rows": rows or "—"})
    shared = {}  # per memory layer: top rows read by the prompts of two or more different entities (of the sample)
    for name in details["layers"]:
        owners: dict = {}
        for s in details["sample"]:
            for row in s["rows"].get(name, [])[:1]:
                owners.setdefault(row, set()).add(s["entity"])
        shared[name] = sum(len(o) > 1 for o in owners.values())
    layer_text = "; ".join(f"{name}: {v['rows_hit']:,} of {v['rows']:,} rows read by the prompts "
                           f"({v['fraction_hit']:.0%})" for name, v in details["layers"].items())
    text = (f"{model}, N = {n_entities} (seed {run.get('seed')}): ranking accuracy "
            f"{run.get('kb_rank_acc', math.nan):.1%}, {run.get('kb_bits', math.nan):,.0f} bits stored. "
            + (layer_text or "no memory rows (dense)."))
    return {"found": True, "text": text, "per_attribute": details["per_attribute"], "facts": facts,
            "shared_rows": shared}


#: Training steps averaged into one point of ``capacity.curves.csv``.
CURVE_WINDOW = 250


def export_curves(out: str | os.PathLike = "runs/sweeps", path: str | os.PathLike | None = None,
                  window: int = CURVE_WINDOW) -> Path | None:
    """Write every finished run's training loss, averaged over windows of ``window`` steps, as
    ``capacity.curves.csv`` (point, seed, step, exposures, loss; ``make capacity`` runs it after the sweep); a few
    kB where the runs' per-step histories are megabytes. None when no finished run has a history."""
    import pandas as pd

    from .io import atomic_write_text
    from .sweep import read_result, study_dir

    folder = study_dir(STUDY, out)
    manifest = folder / "manifest.json"
    rows = []
    for entry in json.loads(manifest.read_text())["tasks"] if manifest.is_file() else []:
        record = read_result(folder / f"{entry['key']}.json", entry["key"])
        results = (record or {}).get("results") or {}
        history, steps = results.get("history") or [], results.get("steps") or 0
        if record is None or record["status"] != "ok" or not history or not steps:
            continue
        exposures_per_step = (results.get("kb_exposures") or 0) / steps
        for start in range(0, len(history), window):
            chunk = history[start:start + window]
            step = chunk[-1]["step"]
            rows.append({"point": entry["point"], "seed": entry["seed"], "step": step,
                         "exposures": step * exposures_per_step,
                         "loss": sum(h["loss"] for h in chunk) / len(chunk)})
    if not rows:
        return None
    target = Path(path) if path is not None else capacity_dir() / f"{STUDY}.curves.csv"
    return atomic_write_text(target, pd.DataFrame(rows).to_csv(index=False, float_format="%.5g"))


def load_curves(folder: str | os.PathLike | None = None):
    """``capacity.curves.csv`` with ``arch`` and ``N`` columns; None if absent."""
    return _read_points_csv(folder, f"{STUDY}.curves.csv")


def plot_curves(curves, n_entities: int, archs=("dense", "memoryplus"), ax=None, title: str = ""):
    """Training loss against exposures per fact at N = ``n_entities``, one line per (architecture, seed): a seed
    that leaves the plateau late stores little by the end of the budget."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    ax = ax or plt.subplots(figsize=(7, 4))[1]
    part = curves[(curves["N"] == n_entities) & curves["arch"].isin(archs)]
    sns.lineplot(data=part, x="exposures", y="loss", hue="arch", style="seed", units=None, estimator=None,
                 ax=ax, hue_order=[a for a in archs if a in set(part["arch"])])
    ax.set(xlabel="exposures per fact", ylabel="training loss (nats per byte)",
           title=title or f"training loss at N = {n_entities}, one line per seed")
    return ax
