"""MemoryFormer run explorer: how a trained model's hash tables are used, table by table, step by step.

    view = memoryformer_view("runs/demo/memoryformer", layer=0, family="qkv", table=3, step=300)
    view = memoryformer_view(run, layer=1, layout="figure4")      # MemoryFormer Figure 4's layout for this run
    run_explorer_widget()                                           # every run under runs/, with controls

Families: ``qkv`` is the one hash the attention's Q, K and V tables share (paper §2.4: three tables, one hash
computation, so their bucket histograms are identical); ``mb1`` and ``mb2`` are the Memory Block's two layers (2^τ
and 2^(τ+e) rows). The counts are the run's usage snapshots (``memlab.lab.snapshots``): hits per bucket on the run's
first validation batch, at initialisation (step 0) and at every stats step.
"""
from __future__ import annotations

import math

import torch

from ... import stats
from .diagnostics import kl_decomposition, mean_summary
from .runs import RunData, as_run, find_runs, load_runs
from .view import View, bucket_bars, draw_stats, lorenz_curve, new_figure

FAMILIES = {"qkv": "Q/K/V (one shared hash)", "mb1": "Memory Block layer 1", "mb2": "Memory Block layer 2"}
LAYOUTS = ("detail", "figure4")


def hash_layer_name(layer: int, family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"family={family!r} is not one of {tuple(FAMILIES)}")
    return f"layer{int(layer)}.{family}"


def hash_layer_ids(run) -> list[int]:
    """The block indices that have hash layers in ``run``."""
    return sorted({int(n.split(".")[0][5:]) for n in as_run(run).layers("hash")})


def _counts(run: RunData, layer: int, family: str, step) -> torch.Tensor:
    name = hash_layer_name(layer, family)
    if name not in run.layers("hash"):
        raise ValueError(f"run {run.name!r} has no hash layer {name!r}; hash layers: {', '.join(run.layers('hash'))}"
                         " (a model without MemoryFormer layers has none: use the product-key explorer)")
    return run.snapshots.counts(name, step)


def memoryformer_view(run, layer: int = 0, family: str = "qkv", table: int = 0, step: int | str | None = None,
                      layout: str = "detail") -> View:
    """One hash table of a run at ``step`` (nearest recorded; None = last) beside the same table at initialisation:
    the bucket histogram in bucket order and sorted, the Lorenz curves, every table's fraction used and KL, and the
    statistics. ``layout="figure4"`` draws MemoryFormer Figure 4's layout instead (``figure4``)."""
    if layout == "figure4":
        return figure4(run, layer, table, step)
    if layout != "detail":
        raise ValueError(f"layout={layout!r} is not one of {LAYOUTS}")
    run = as_run(run)
    step = run.snapshots.step(step)
    init = run.steps[0]
    now, start = _counts(run, layer, family, step), _counts(run, layer, family, init)
    k, rows = now.shape
    if not 0 <= table < k:
        raise ValueError(f"table={table} is out of range: layer{layer}.{family} has {k} tables (0 … {k - 1})")
    c, c0 = now[table], start[table]
    tokens = float(c.sum())
    s, s0 = stats.usage_summary(c), stats.usage_summary(c0)
    mean, mean0 = mean_summary(now), mean_summary(start)
    split = kl_decomposition(now)
    result = {
        "run": run.name, "step": step, "tokens": int(tokens), "rows": rows, "hits_per_row": tokens / rows,
        "fraction_used": s["fraction_used"], "fraction_used_at_init": s0["fraction_used"],
        "uniform_fraction_used": 1 - math.exp(tokens * math.log1p(-1 / rows)),
        "kl_uniform": s["kl_uniform"], "kl_at_init": s0["kl_uniform"],
        "gini": s["gini"], "gini_at_init": s0["gini"], "top_50": s["top_50"],
        "layer_mean_fraction_used": mean["fraction_used"], "layer_mean_fraction_used_at_init": mean0["fraction_used"],
        "layer_mean_kl": mean["kl_uniform"], "layer_mean_gini": mean["gini"],
        "kl_from_bit_bias": float(split["bias"][table]), "kl_from_bit_dependence": float(split["dependence"][table]),
    }
    if "val_ppl" in run.results:
        result["val_ppl"] = run.results["val_ppl"]

    fig, axes = new_figure(2, 3, 11, 6.2)
    label = f"layer{layer}.{family} table {table}"
    for ax, counts, when in ((axes[0, 0], c, f"step {step}"), (axes[0, 1], c0, f"initialisation (step {init})")):
        bucket_bars(ax, counts, color="tab:blue" if counts is c else "tab:gray")
        ax.axhline(tokens / rows, color="k", ls="--", lw=1, label="uniform")
        ax.set(xlabel="bucket", ylabel="hits", title=f"{when}: bucket order")
        ax.legend(fontsize=7, loc="upper right")
    top = max(float(c.max()), float(c0.max())) * 1.05
    axes[0, 0].set_ylim(0, top)
    axes[0, 1].set_ylim(0, top)
    ax = axes[0, 2]
    x = (torch.arange(rows) + 0.5).numpy() / rows
    ax.plot(x, c.sort(descending=True).values.numpy(), label=f"step {step}")
    ax.plot(x, c0.sort(descending=True).values.numpy(), color="tab:gray", label="init")
    ax.axhline(tokens / rows, color="k", ls="--", lw=1, label="uniform")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(bottom=0)
    ax.set(xlabel="bucket rank / buckets", ylabel="hits", title="sorted, most-hit first")
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[1, 0]
    for counts, name, color in ((c, f"step {step}", "tab:blue"), (c0, "init", "tab:gray")):
        lx, ly = lorenz_curve(counts)
        ax.plot(lx.numpy(), ly.numpy(), color=color, label=f"{name} (Gini {stats.gini(counts):.2f})")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="uniform")
    ax.set(xlabel="share of buckets (least used first)", ylabel="share of hits", title="Lorenz curve")
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[1, 1]
    used = (now > 0).double().mean(-1).numpy()
    used0 = (start > 0).double().mean(-1).numpy()
    idx = torch.arange(k).numpy()
    ax.bar(idx - 0.2, used0, width=0.4, color="tab:gray", label="init")
    ax.bar(idx + 0.2, used, width=0.4, color="tab:blue", label=f"step {step}")
    ax.axhline(result["uniform_fraction_used"], color="k", ls="--", lw=1, label="uniform hashing")
    ax.set(xlabel="table k", ylabel="fraction of rows used", title=f"every table of layer{layer}.{family}",
           ylim=(0, 1.05))
    ax.legend(fontsize=7, loc="upper right")
    draw_stats(axes[1, 2], result, [key for key in result if key != "run"], title=label)
    return View(f"{run.name}: {label}, step {step}", fig, result,
                {"counts": c, "counts_init": c0, "layer_counts": now, "layer_counts_init": start})


def figure4(run, layer: int = 0, table: int = 0, step: int | str | None = None) -> View:
    """MemoryFormer Figure 4's layout for one run: the retrieval frequency of every bucket (hits / tokens, bucket
    order) of one table in each memory layer of a block — Q, K, V and the Memory Block's two layers. In memlab, as in
    the paper's design, Q, K and V share one hash, so their three panels are the same histogram."""
    run = as_run(run)
    step = run.snapshots.step(step)
    panels = [("Q", "qkv"), ("K", "qkv"), ("V", "qkv"), ("Memory Block 1", "mb1"), ("Memory Block 2", "mb2")]
    fig, axes = new_figure(1, 5, 14, 3.0)
    result = {"run": run.name, "step": step, "layer": layer, "table": table}
    data = {}
    for ax, (title, family) in zip(axes[0], panels):
        counts = _counts(run, layer, family, step)
        if not 0 <= table < counts.shape[0]:
            raise ValueError(f"table={table} is out of range: {counts.shape[0]} tables")
        c = counts[table]
        freq = c / c.sum()
        rows = c.numel()
        bucket_bars(ax, freq, color="tab:blue")
        ax.axhline(1 / rows, color="k", ls="--", lw=1)
        ax.set(title=f"{title}", xlabel="bucket", ylabel="retrieval frequency" if title == "Q" else None)
        result[f"{family}_fraction_used"] = stats.fraction_used(c)
        result[f"{family}_kl_uniform"] = stats.kl_from_uniform(c)
        data[family] = freq
    fig.suptitle(f"{run.name}, block {layer}, table {table}, step {step} (layout of MemoryFormer Figure 4; "
                 "dashed: uniform)", fontsize=9)
    return View(f"{run.name}: Figure 4 layout, block {layer}", fig, result, data)


def run_explorer_widget(runs: dict | None = None, root: str = "runs", **initial):
    """The run explorer with controls: run (``runs`` {label: path or RunData}, default every run with hash layers
    under ``root``), layer, family, table, step, layout. Returns a ``Dashboard``."""
    import ipywidgets as widgets

    from .dashboard import Dashboard, set_options

    runs = {label: r for label, r in load_runs(runs if runs is not None else find_runs(root)).items()
            if r.layers("hash")}
    if not runs:
        raise FileNotFoundError(f"no run with MemoryFormer usage snapshots under {root}/; train one "
                                "(python -m memlab train --model memoryformer) or pass runs={{label: path}}")
    first = next(iter(runs.values()))
    style = {"description_width": "70px"}
    controls = {
        "run": widgets.Dropdown(options=list(runs.items()), value=initial.get("run", first), description="run",
                                style=style),
        "layer": widgets.Dropdown(options=hash_layer_ids(first), description="layer", style=style),
        "family": widgets.Dropdown(options=[(v, k) for k, v in FAMILIES.items()], value=initial.get("family", "qkv"),
                                   description="table family", style=style),
        "table": widgets.IntSlider(min=0, max=0, description="table k", continuous_update=False, style=style),
        "step": widgets.SelectionSlider(options=first.steps, value=first.steps[-1], description="step",
                                        continuous_update=False, style=style),
        "layout": widgets.ToggleButtons(options=[("detail", "detail"), ("Figure 4", "figure4")],
                                        value=initial.get("layout", "detail"), style={"button_width": "80px"}),
    }

    def link(dash: Dashboard, changed: str) -> None:
        c = dash.controls
        run = c["run"].value
        layers = hash_layer_ids(run)
        set_options(c["layer"], layers, c["layer"].value if c["layer"].value in layers else layers[0])
        set_options(c["step"], run.steps, run.snapshots.step(c["step"].value))
        tables = run.snapshots.layers[hash_layer_name(c["layer"].value, c["family"].value)]["tables"]
        c["table"].max = tables - 1
        if changed == "":
            for name in ("layer", "table"):
                if name in initial:
                    c[name].value = initial[name]
            if "step" in initial:
                c["step"].value = run.snapshots.step(initial["step"])

    return Dashboard(memoryformer_view, controls, link=link, title="MemoryFormer run explorer: hash-table usage")
