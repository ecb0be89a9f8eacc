"""Notebook 08's investigation, one function per question, each returning a pandas DataFrame (one row per layer).

    hash_layer_table(run)        how unevenly is each hash layer used, against uniform hashing at the same N, and how
                                 much of the KL is unfair bits vs dependent bits
    usage_over_training(run)     does it grow with training? one statistic per layer at every recorded step
    input_structure(run)         what the layers hash: distinct inputs, sign bias, correlation inside vs across chunks,
                                 effective number of dimensions
    remap_table(run)             the same activations hashed after a fixed random rotation, or centred: which cause a
                                 map before hashing can remove (no retraining; the sweep ``mf-hash-input`` retrains)
    product_key_table(run)       the product-key memory's heads against uniform addressing at the same number of reads
"""
from __future__ import annotations

import math

import torch

from ... import stats
from ...layers.hash_input import random_rotation
from .diagnostics import chunk_correlation, distinct_inputs, hash_counts, kl_decomposition, mean_summary, sign_bias
from .runs import as_run, layer_activations


def _uniform_fraction(tokens: float, rows: int) -> float:
    return 1 - math.exp(tokens * math.log1p(-1 / rows))


def hash_layer_table(run, step: int | str | None = None):
    """Per hash layer at ``step`` (default: the last): rows per table, hits per row, fraction used (mean over tables)
    and what uniform hashing would reach, KL to uniform and its two parts (bit bias, bit dependence), Gini."""
    import pandas as pd

    run = as_run(run)
    rows = []
    for name in run.layers("hash"):
        counts = run.snapshots.counts(name, step)
        summary = mean_summary(counts)
        split = kl_decomposition(counts)
        tokens = float(counts[0].sum())
        rows.append({"layer": name, "rows": counts.shape[1], "hits_per_row": tokens / counts.shape[1],
                     "fraction_used": summary["fraction_used"],
                     "uniform_fraction_used": _uniform_fraction(tokens, counts.shape[1]),
                     "kl_uniform": summary["kl_uniform"], "kl_bit_bias": float(split["bias"].mean()),
                     "kl_bit_dependence": float(split["dependence"].mean()), "gini": summary["gini"]})
    return pd.DataFrame(rows).set_index("layer")


def usage_over_training(run, statistic: str = "fraction_used", kind: str = "hash"):
    """``statistic`` (mean over tables or heads) of every ``kind`` layer at every recorded step: index = step."""
    import pandas as pd

    run = as_run(run)
    table = {name: [mean_summary(run.snapshots.counts(name, s))[statistic] for s in run.steps]
             for name in run.layers(kind)}
    return pd.DataFrame(table, index=pd.Index(run.steps, name="step"))


def input_structure(run, which: str = "final"):
    """Per hash layer, from its activations on the snapshot batch (``which``: "final" checkpoint or "init"): width,
    τ, distinct input vectors, mean |P(x_i ≥ 0) − ½|, mean |correlation| of coordinate pairs inside a chunk and across
    chunks, and the effective number of dimensions (participation ratio of the covariance's eigenvalues)."""
    import pandas as pd

    run = as_run(run)
    rows = []
    for name in run.layers("hash"):
        info = run.snapshots.layers[name]
        x = layer_activations(run, name, which).double()
        corr = chunk_correlation(x, info["tau"])
        rows.append({"layer": name, "width": x.shape[1], "tau": info["tau"], "tokens": x.shape[0],
                     "distinct_inputs": distinct_inputs(x), "sign_bias": float(sign_bias(x).mean()),
                     "corr_within_chunk": corr["within_chunk"], "corr_across_chunks": corr["across_chunks"],
                     "effective_dims": corr["effective_dims"]})
    return pd.DataFrame(rows).set_index("layer")


def remap_table(run, which: str = "final", seed: int = 0):
    """Per hash layer: fraction used and KL (means over tables) of its activations hashed as they are, after a fixed
    random rotation, and centred (minus their mean over the batch: what ``mf_hash_input="center"``'s running mean
    converges to). The model is not retrained, so this isolates what each map does to the inputs it is given."""
    import pandas as pd

    run = as_run(run)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for name in run.layers("hash"):
        tau = run.snapshots.layers[name]["tau"]
        x = layer_activations(run, name, which).double()
        rotation = random_rotation(x.shape[1], gen, torch.float64)
        row = {"layer": name}
        for label, mapped in (("x", x), ("rotated", x @ rotation.T), ("centred", x - x.mean(0))):
            summary = mean_summary(hash_counts(mapped, tau))
            row[f"{label}_fraction_used"] = summary["fraction_used"]
            row[f"{label}_kl"] = summary["kl_uniform"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("layer")


def product_key_table(run, step: int | str | None = None):
    """Per product-key layer and head at ``step``: values, reads, fraction used and what uniform addressing would reach
    with as many reads, KL to uniform, Gini; a row "all heads" per layer pools the heads."""
    import pandas as pd

    run = as_run(run)
    rows = []
    for name in run.layers("product_keys"):
        counts = run.snapshots.counts(name, step)
        for head, c in [*enumerate(counts), ("all heads", counts.sum(0))]:
            s = stats.usage_summary(c)
            rows.append({"layer": name, "head": head, "values": c.numel(), "reads": int(c.sum()),
                         "fraction_used": s["fraction_used"],
                         "uniform_fraction_used": _uniform_fraction(float(c.sum()), c.numel()),
                         "kl_uniform": s["kl_uniform"], "gini": s["gini"]})
    return pd.DataFrame(rows).set_index(["layer", "head"])


def plot_usage_over_training(table, ax=None, title: str = "usage of every layer over training",
                             ylabel: str = "fraction of rows used (mean over tables)"):
    """``usage_over_training``'s frame as one line per layer against the step; returns the axes."""
    from ..plots import style_axes
    from .view import new_figure

    if ax is None:
        _, axes = new_figure(1, 1, 7, 3.6)
        ax = axes[0, 0]
    for name in table.columns:
        ax.plot(table.index, table[name], marker=".", label=name)
    ax.set_ylim(0, 1.02)
    style_axes(ax, "step", ylabel, title, legend=False)
    ax.legend(fontsize=6, ncol=3, loc="lower left")
    return ax
