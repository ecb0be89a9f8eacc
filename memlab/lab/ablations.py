"""Reading the ablation results: the committed CSVs, one figure per study, and the interactive explorer of notebook 06.

    results_dir / load_results / load_all   data/ablations/<study>.csv (``make ablations`` writes them; committed)
    filter_rows                             keep some seeds and/or the rows a pandas query selects
    plot_study                              one study: every seed as a dot, mean ± 95 % t-CI over seeds as error bars
    explore                                 filter + summary + figure + verdicts: what one widget update shows
    explorer                                the ipywidgets front end of ``explore`` (study, x, metric, seeds, query)

The figure's intervals are ``sweep.summarize``'s (Student t over seeds), the same numbers the verdicts use
(``verdicts.py``), not seaborn's bootstrap: with three seeds a bootstrap interval is too narrow. ``explore`` is a plain
function so it can be unit-tested; the widget only calls it (ipywidgets swallows exceptions raised in a callback).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .._checks import did_you_mean
from . import verdicts as verdicts_lib
from .studies import STUDIES
from .sweep import summarize, summary_table

#: x axes offered by the explorer: the points themselves, or a quantity that is fixed per point.
X_CHOICES = ("point", "memory_mb", "flops_per_token", "params_total", "params_active")
#: metrics offered by the explorer (columns of ``sweep.load``'s DataFrame).
METRIC_CHOICES = ("val_ppl", "val_loss", "fact_recall", "fact_qa_heldout", "tokens_per_s", "usage_fraction_used",
                  "usage_gini", "usage_kl_uniform", "usage_entropy", "train_seconds")


def results_dir() -> Path:
    """``$MEMLAB_ABLATIONS`` if set, else ``data/ablations`` of the memlab checkout this package lives in."""
    if os.environ.get("MEMLAB_ABLATIONS"):
        return Path(os.environ["MEMLAB_ABLATIONS"])
    return Path(__file__).resolve().parents[2] / "data" / "ablations"


def load_results(study: str, folder: str | os.PathLike | None = None):
    """The committed results of ``study`` as a DataFrame (one row per (point, seed)), or None if there is no CSV."""
    import pandas as pd

    path = Path(folder if folder is not None else results_dir()) / f"{study}.csv"
    if not path.is_file():
        return None
    return pd.read_csv(path)


def load_all(folder: str | os.PathLike | None = None, studies: Sequence[str] | None = None) -> dict:
    """{study: DataFrame or None} for every shipped study (or ``studies``), in ``STUDIES`` order."""
    return {name: load_results(name, folder) for name in (studies if studies is not None else STUDIES)}


def point_order(df, study: str | None = None) -> list[str]:
    """The points of ``df`` in the study's run order (its grid or list), else in order of appearance."""
    present = list(dict.fromkeys(df["point"].astype(str)))
    if study in STUDIES:
        known = [label for label, _ in STUDIES[study].point_list()]
        return [p for p in known if p in present] + [p for p in present if p not in known]
    return present


def _check_column(df, name: str) -> None:
    if name not in df.columns:
        columns = [str(c) for c in df.columns]
        raise ValueError(f"no column {name!r}{did_you_mean(name, columns)}; columns: {', '.join(columns)}")


def filter_rows(df, seeds: Sequence[int] | None = None, query: str = ""):
    """Finished rows (status "ok") of ``df``, keeping only ``seeds`` (None: all) and the rows ``query`` selects.

    ``query`` is a pandas ``DataFrame.query`` expression over the columns, e.g. ``"memory_mb < 5"`` or
    ``"point != 'tau=10'"``; a bad one raises ValueError naming it.
    """
    rows = df[df["status"] == "ok"] if "status" in df.columns else df
    if seeds is not None:
        rows = rows[rows["seed"].isin(list(seeds))]
    if query and query.strip():
        try:
            rows = rows.query(query)
        except Exception as e:  # pandas raises many kinds (SyntaxError, UndefinedVariableError, TypeError …)
            raise ValueError(f"filter {query!r} failed: {type(e).__name__}: {e}") from None
    return rows


def _axes(ax, figsize=(6.4, 3.8)):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_study(df, x: str = "point", metric: str = "val_ppl", ax=None, title: str | None = None,
               study: str | None = None, confidence: float = 0.95):
    """Every seed of every point as a grey dot, and the mean ± ``confidence`` t-interval over seeds (``summarize``)
    as a line with error bars. ``x`` = "point" puts the points in run order on a categorical axis; a numeric column
    that is fixed per point (``X_CHOICES``) gives a numeric axis (log-scaled when it spans more than 20×).
    Returns the axes; its ``memlab_summary`` attribute holds the summary it drew."""
    import numpy as np
    import seaborn as sns

    _check_column(df, metric)
    _check_column(df, x)
    study = study or (str(df["study"].iloc[0]) if "study" in df.columns and len(df) else None)
    rows = df[df[metric].notna()] if len(df) else df
    if "status" in rows.columns:
        rows = rows[rows["status"] == "ok"]
    if not len(rows):
        raise ValueError(f"no finished rows with a value for {metric!r} to plot")
    ax = _axes(ax)
    order = point_order(rows, study)
    metrics = [metric] + ([x] if x != "point" else [])
    summary = summarize(rows, by="point", metrics=metrics, confidence=confidence)
    summary = summary.set_index("point").loc[order].reset_index()
    means = summary[f"{metric}_mean"].to_numpy(float)
    cis = np.nan_to_num(summary[f"{metric}_ci"].to_numpy(float))  # n = 1: no interval, no bar
    label = f"mean ± {confidence:.0%} CI over seeds"
    if x == "point":
        rows = rows.assign(point=rows["point"].astype(str))
        sns.stripplot(data=rows, x="point", y=metric, order=order, color="0.6", size=4, jitter=0.08, ax=ax,
                      label="one seed")
        ax.errorbar(range(len(order)), means, yerr=cis, fmt="o-", color="C0", capsize=4, lw=1.5, label=label)
        if max(len(p) for p in order) > 12:
            ax.tick_params(axis="x", labelrotation=20)
    else:
        xs = summary[f"{x}_mean"].to_numpy(float)
        sns.scatterplot(data=rows, x=x, y=metric, color="0.6", s=18, ax=ax, label="one seed")
        sort = np.argsort(xs)
        ax.errorbar(xs[sort], means[sort], yerr=cis[sort], fmt="o-", color="C0", capsize=4, lw=1.5, label=label)
        names = [str(p) for p in summary["point"]]
        keys = {n.split("=", 1)[0] for n in names}
        if len(keys) == 1 and all(n.count("=") == 1 for n in names):  # "model=pkm" → "pkm": shorter labels
            names = [n.split("=", 1)[1] for n in names]
        for xi, yi, name in zip(xs, means, names):
            ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
        positive = xs[xs > 0]
        if len(positive) == len(xs) and positive.max() / positive.min() > 20:
            ax.set_xscale("log")
    handles, labels = ax.get_legend_handles_labels()
    keep = {lab: h for h, lab in zip(handles, labels)}  # stripplot adds one legend entry per point: keep one
    ax.legend(keep.values(), keep.keys(), fontsize=8)
    n = summary["n"]
    seeds = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
    ax.set_title(title or f"{study or ''}: {metric}, {seeds} seeds per point", fontsize=10)
    ax.set_xlabel(x)
    ax.set_ylabel(metric + (" (lower is better)" if verdicts_lib.lower_is_better(metric) else " (higher is better)"))
    ax.grid(alpha=0.3)
    ax.memlab_summary = summary
    return ax


def explore(frames: Mapping[str, object], study: str, x: str = "point", metric: str = "val_ppl",
            seeds: Sequence[int] | None = None, query: str = "", ax=None, confidence: float = 0.95) -> dict:
    """One update of the explorer: filter ``frames[study]``, summarise ``metric`` by point, plot it, judge the
    study's claims on the filtered rows. Returns {"study", "x", "metric", "seeds", "query", "rows" (count),
    "summary" (DataFrame: point, n, <metric>_mean/_std/_ci), "verdicts" (list of ``Verdict``), "ax"}.

    Raises ValueError for an unknown study or column, a study without results, a bad query, or no rows left."""
    if study not in frames:
        raise ValueError(f"unknown study {study!r}{did_you_mean(str(study), list(frames))}")
    df = frames[study]
    if df is None:
        raise ValueError(f"no results for {study!r} yet: run `python -m memlab sweep --study {study} "
                         "--export data/ablations`")
    for name in (x, metric):
        _check_column(df, name)
    rows = filter_rows(df, seeds, query)
    rows = rows[rows[metric].notna()]
    if not len(rows):
        raise ValueError(f"no finished rows of {study!r} with a value for {metric!r} left after the filters "
                         f"(seeds={list(seeds) if seeds is not None else 'all'}, query={query!r})")
    ax = plot_study(rows, x=x, metric=metric, ax=ax, study=study, confidence=confidence)
    summary = ax.memlab_summary[["point", "n", f"{metric}_mean", f"{metric}_std", f"{metric}_ci"]]
    found = verdicts_lib.study_verdicts(study, rows, metric=metric, confidence=confidence)
    return {"study": study, "x": x, "metric": metric, "seeds": None if seeds is None else tuple(seeds),
            "query": query, "rows": len(rows), "summary": summary, "verdicts": found, "ax": ax}


def explorer(frames: Mapping[str, object], study: str | None = None, metric: str = "val_ppl"):
    """An ``ipywidgets.interactive`` over ``explore``. Children, in order: study (Dropdown), x (Dropdown), metric
    (Dropdown), seeds (SelectMultiple), query (Text, applied on Enter), then the output area. Setting a child's
    ``.value`` re-runs it; ``w.result`` is ``explore``'s dict, or {"error": message} when it raised ValueError
    (the message is also printed, since ipywidgets would swallow the exception)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    available = [name for name, df in frames.items() if df is not None]
    if not available:
        raise ValueError("no study has results to explore; run `make ablations` (or python -m memlab sweep)")
    all_seeds = sorted({int(s) for name in available for s in frames[name]["seed"].dropna()})

    def update(study, x, metric, seeds, query):
        try:
            result = explore(frames, study, x, metric, seeds=list(seeds), query=query)
        except ValueError as e:
            print(f"error: {e}")
            return {"error": str(e)}
        fig = result["ax"].figure
        display(fig)
        plt.close(fig)
        keys = ["point", "n", f"{metric}_mean", f"{metric}_std", f"{metric}_ci"]
        print(summary_table(result["summary"][keys], [metric]))
        for v in result["verdicts"]:
            print(f"{v.claim.where} ({v.claim.paper.split(' (')[0]}): {v.sentence()}")
        return result

    controls = dict(
        study=widgets.Dropdown(options=available, value=study or available[0], description="study"),
        x=widgets.Dropdown(options=list(X_CHOICES), value="point", description="x"),
        metric=widgets.Dropdown(options=list(METRIC_CHOICES), value=metric, description="metric"),
        seeds=widgets.SelectMultiple(options=all_seeds, value=tuple(all_seeds), description="seeds", rows=3),
        query=widgets.Text(value="", placeholder="pandas query, e.g. memory_mb < 5", description="filter",
                           continuous_update=False),
    )
    return widgets.interactive(update, **controls)
