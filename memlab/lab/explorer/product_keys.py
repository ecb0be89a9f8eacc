"""Product-key explorer: which of the n² values a trained product-key memory reads, and how peaked its scores are.

    view = product_key_view("runs/demo/memoryplus", layer="layer2.pkm", head=0, step=300, k=8)
    product_key_widget()                                              # every run with product keys, with controls

Value (i, j) is row i·n + j (Lample et al. 2019; Memory Layers at Scale §2), so one head's hits form an n × n map:
row = first half-key, column = second. Beside it: the hits per half-key (a map made of a few bright rows or columns
is one half collapsing); the share of the softmax mass over all n² keys that the top-k keep,
exp(logsumexp(top-k scores) − log Σ_{i,j} e^{s1_i + s2_j}), for every k up to the stored ``SCORE_K``; the top-k
scores themselves; both with qk-norm on and off for the same weights (``memlab.lab.snapshots.scores_with_qk_norm``);
and, where several layers read one shared value pool (Memory+), how much of the pool each uses and how much they share.
"""
from __future__ import annotations

import math

import torch

from ... import stats
from .diagnostics import mean_summary
from .runs import RunData, as_run, find_runs, load_runs
from .view import View, draw_stats, new_figure


def pk_layer_name(run: RunData, layer: str | int | None) -> str:
    """A product-key layer's name from a name, a block index, or None (the first)."""
    names = run.layers("product_keys")
    if not names:
        raise ValueError(f"run {run.name!r} has no product-key layer (model {run.model_config['model']!r}); "
                         "use the MemoryFormer run explorer for hash tables")
    if layer is None:
        return names[0]
    if isinstance(layer, int):
        found = [n for n in names if n.startswith(f"layer{layer}.")]
        if not found:
            raise ValueError(f"block {layer} has no product-key layer; product-key layers: {', '.join(names)}")
        return found[0]
    if layer not in names:
        raise ValueError(f"no product-key layer {layer!r}; product-key layers: {', '.join(names)}")
    return layer


def kept_mass(top: torch.Tensor, log_norm: torch.Tensor, k: int) -> torch.Tensor:
    """Share of the full softmax mass (over all n² keys) that the best k scores hold: (..., K) top scores sorted
    descending and (...) log-normaliser → (...) in (0, 1]."""
    if not 1 <= k <= top.shape[-1]:
        raise ValueError(f"k={k} must lie in [1, {top.shape[-1]}] (the scores stored per token)")
    return (torch.logsumexp(top[..., :k].double(), -1) - log_norm.double()).exp().clamp(max=1.0)


def shared_value_use(run: RunData, layer: str, step) -> dict[str, float]:
    """Rows of the value pool used by each layer that reads it (all heads pooled), by any, and by more than one."""
    info = run.snapshots.layers[layer]
    group = [layer] + list(info.get("shares_values_with", []))
    used = {name: run.snapshots.counts(name, step).sum(0) > 0 for name in sorted(group)}
    stack = torch.stack(list(used.values())).double()
    out = {f"{name}": float(u.double().mean()) for name, u in used.items()}
    out["any layer"] = float((stack.sum(0) > 0).double().mean())
    out["2+ layers"] = float((stack.sum(0) > 1).double().mean())
    return out


def product_key_view(run, layer: str | int | None = None, head: int = 0, step: int | str | None = None,
                     k: int | None = None) -> View:
    """One head of a product-key layer at ``step`` (nearest recorded; None = last); ``k`` (default: the layer's
    top-k) sets the mass-kept marker and the scores shown. Module docstring for the panels."""
    run = as_run(run)
    name = pk_layer_name(run, layer)
    info = run.snapshots.layers[name]
    n, heads, topk = info["n_keys"], info["heads"], info["topk"]
    step = run.snapshots.step(step)
    k = topk if k is None else int(k)
    if not 0 <= head < heads:
        raise ValueError(f"head={head} is out of range: {name} has {heads} heads (0 … {heads - 1})")
    counts = run.snapshots.counts(name, step)  # (H, n²)
    init = run.snapshots.counts(name, run.steps[0])
    c = counts[head]
    top, lse = run.snapshots.scores(name, step)
    top_f, lse_f = run.snapshots.scores(name, step, flipped=True)
    kmax = top.shape[-1]
    if not 1 <= k <= kmax:
        raise ValueError(f"k={k} must lie in [1, {kmax}]: the snapshots keep the best {kmax} scores per token")
    qk = info.get("query_norm") == "qk"
    on, off = ((top, lse), (top_f, lse_f)) if qk else ((top_f, lse_f), (top, lse))
    ks = torch.arange(1, kmax + 1)
    mass_on = torch.stack([kept_mass(on[0][:, head], on[1][:, head], int(j)).mean() for j in ks])
    mass_off = torch.stack([kept_mass(off[0][:, head], off[1][:, head], int(j)).mean() for j in ks])
    s = stats.usage_summary(c)
    pooled = counts.sum(0)
    pool = stats.usage_summary(pooled)
    draws = float(c.sum())
    result = {
        "run": run.name, "layer": name, "step": step, "values": n * n, "heads": heads, "top_k": topk,
        "qk_norm_trained": qk,
        "head_fraction_used": s["fraction_used"], "head_fraction_used_at_init": stats.fraction_used(init[head]),
        "uniform_fraction_used": 1 - math.exp(draws * math.log1p(-1 / (n * n))),
        "head_kl_uniform": s["kl_uniform"], "head_gini": s["gini"],
        "layer_fraction_used": pool["fraction_used"], "layer_kl_uniform": pool["kl_uniform"],
        "heads_mean_kl": mean_summary(counts)["kl_uniform"],
        "k": k, "mass_kept": float((mass_on if qk else mass_off)[k - 1]),
        "mass_kept_qk_on": float(mass_on[k - 1]), "mass_kept_qk_off": float(mass_off[k - 1]),
    }
    shared = shared_value_use(run, name, step)
    if len(shared) > 3:
        result["pool_used_by_any_layer"] = shared["any layer"]
        result["pool_used_by_2+_layers"] = shared["2+ layers"]

    fig, axes = new_figure(2, 3, 11, 6.6)
    ax = axes[0, 0]
    grid = c.reshape(n, n)
    im = ax.imshow(grid.log1p().numpy(), cmap="viridis", aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="log(1 + hits)")
    ax.set(xlabel="second half-key j", ylabel="first half-key i", title=f"{name} head {head}: hits of value (i, j)")
    ax = axes[0, 1]
    rows, cols = grid.sum(1), grid.sum(0)
    x = (torch.arange(n) + 0.5).numpy() / n
    ax.plot(x, rows.sort(descending=True).values.numpy(), label="first half-keys i")
    ax.plot(x, cols.sort(descending=True).values.numpy(), label="second half-keys j")
    ax.axhline(draws / n, color="k", ls="--", lw=1, label="uniform")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(bottom=0)
    ax.set(xlabel="half-key rank / n", ylabel="hits", title="hits per half-key, most-hit first")
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[0, 2]
    ax.plot(ks.numpy(), mass_on.numpy(), "o-", ms=3, label="qk-norm on")
    ax.plot(ks.numpy(), mass_off.numpy(), "s-", ms=3, label="qk-norm off")
    ax.axvline(k, color="k", ls=":", lw=1, label=f"k = {k}")
    ax.set(xlabel="k", ylabel="share of softmax mass (mean)", title="mass the top-k keep of all n² keys",
           ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[1, 0]
    a, b = on[0][:, head, :k].reshape(-1), off[0][:, head, :k].reshape(-1)
    ax.hist(a.numpy(), bins=40, alpha=0.6, label="qk-norm on", histtype="stepfilled")
    ax.hist(b.numpy(), bins=40, alpha=0.6, label="qk-norm off", histtype="stepfilled")
    ax.set(xlabel="score s1_i + s2_j", ylabel="count",
           title=f"top-{k} scores (trained with qk-norm {'on' if qk else 'off'})")
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[1, 1]
    labels = list(shared)
    ax.bar(range(len(labels)), [shared[x] for x in labels], color="tab:purple")
    ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
    ax.set(ylabel="fraction of the value pool", title="value pool use across layers", ylim=(0, 1.05))
    draw_stats(axes[1, 2], result, [key for key in result if key not in ("run", "layer")],
               title=f"{name}, head {head}, step {step}")
    data = {"counts": c, "grid": grid, "layer_counts": counts, "mass_qk_on": mass_on, "mass_qk_off": mass_off,
            "top_scores": (on if qk else off)[0][:, head, :k], "shared": shared}
    return View(f"{run.name}: {name} head {head}, step {step}", fig, result, data)


def product_key_widget(runs: dict | None = None, root: str = "runs", **initial):
    """The product-key explorer with controls: run, layer, head, step, k. Returns a ``Dashboard``."""
    import ipywidgets as widgets

    from .dashboard import Dashboard, set_options

    runs = {label: r for label, r in load_runs(runs if runs is not None else find_runs(root)).items()
            if r.layers("product_keys")}
    if not runs:
        raise FileNotFoundError(f"no run with product-key usage snapshots under {root}/; train one "
                                "(python -m memlab train --model memoryplus) or pass runs={{label: path}}")
    first = next(iter(runs.values()))
    style = {"description_width": "50px"}
    slider = dict(continuous_update=False, style=style)
    controls = {
        "run": widgets.Dropdown(options=list(runs.items()), value=initial.get("run", first), description="run",
                                style=style),
        "layer": widgets.Dropdown(options=first.layers("product_keys"), description="layer", style=style),
        "head": widgets.IntSlider(min=0, max=0, description="head", **slider),
        "step": widgets.SelectionSlider(options=first.steps, value=first.steps[-1], description="step", **slider),
        "k": widgets.IntSlider(min=1, max=1, description="k", **slider),
    }

    def link(dash: Dashboard, changed: str) -> None:
        c = dash.controls
        run = c["run"].value
        layers = run.layers("product_keys")
        set_options(c["layer"], layers, c["layer"].value if c["layer"].value in layers else layers[0])
        set_options(c["step"], run.steps, run.snapshots.step(c["step"].value))
        info = run.snapshots.layers[c["layer"].value]
        c["head"].max = info["heads"] - 1
        kmax = run.snapshots.scores(c["layer"].value, c["step"].value)[0].shape[-1]
        c["k"].max = kmax
        if changed in ("", "run", "layer"):
            c["k"].value = min(info["topk"], kmax)
        if changed == "":
            for name in ("layer", "head", "k"):
                if name in initial:
                    c[name].value = initial[name]
            if "step" in initial:
                c["step"].value = run.snapshots.step(initial["step"])

    return Dashboard(product_key_view, controls, link=link, title="Product-key explorer: value use and top-k mass")
