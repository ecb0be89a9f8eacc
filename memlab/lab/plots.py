"""Plotting and display helpers for the notebooks: each figure's data comes from a memlab function, never typed in.

    figure1_data / plot_figure1        MemoryFormer Figure 1: FLOPs per block vs hidden size (memlab.flops)
    plot_temperature                   p(z) of one coordinate, σ(2|z|/t), for several temperatures t
    plot_usage                         sorted row-usage curves of one or more histograms (memlab.stats)
    format_table                       a list of dicts as a fixed-width text table (memlab.lab.tables, re-exported)

Functions take an optional ``ax`` and return it, so notebooks can compose figures; matplotlib is imported lazily.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch

from . import flops as _flops
from .tables import format_table

#: The x axis of MemoryFormer's Figure 1: hidden sizes 512 … 3072.
FIGURE1_HIDDEN_SIZES = tuple(range(512, 3072 + 1, 256))
FIGURE1_SEQ_LENS = (1024, 2048)


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 4))
    return ax


def style_axes(ax, xlabel: str, ylabel: str, title: str | None = None, legend: bool = True):
    """memlab's figure style: labels, title, a light grid and a small legend; returns the axes."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)
    return ax


def figure1_data(
    hidden_sizes: Iterable[int] = FIGURE1_HIDDEN_SIZES,
    seq_lens: Iterable[int] = FIGURE1_SEQ_LENS,
    tau: int = 8,
) -> dict[int, dict[str, list[float]]]:
    """GFLOPs per block for Figure 1: {s: {"d": [...], "transformer": [...], "memoryformer": [...]}}.

    Transformer: 2s²d + 12sd²; MemoryFormer: 2s²d + 6Ksd with K = d/τ (memlab.flops). Every d must be divisible by τ.
    """
    hidden_sizes = list(hidden_sizes)
    for d in hidden_sizes:
        if d % tau:
            raise ValueError(f"hidden size {d} is not divisible by tau={tau}")
    data = {}
    for s in seq_lens:
        data[s] = {
            "d": hidden_sizes,
            "transformer": [_flops.transformer_block_flops(s, d) / 1e9 for d in hidden_sizes],
            "memoryformer": [_flops.memoryformer_block_flops(s, d, d // tau) / 1e9 for d in hidden_sizes],
        }
    return data


def plot_figure1(
    ax=None,
    hidden_sizes: Iterable[int] = FIGURE1_HIDDEN_SIZES,
    seq_lens: Iterable[int] = FIGURE1_SEQ_LENS,
    tau: int = 8,
):
    """Redraw MemoryFormer's Figure 1 (GFLOPs per block vs hidden size) from ``figure1_data``; returns the axes."""
    ax = _axes(ax)
    data = figure1_data(hidden_sizes, seq_lens, tau)
    for s, series in data.items():
        (line,) = ax.plot(series["d"], series["transformer"], marker="o", ms=3, label=f"Transformer, s={s}")
        ax.plot(series["d"], series["memoryformer"], marker="s", ms=3, ls="--", color=line.get_color(),
                label=f"MemoryFormer (τ={tau}), s={s}")
    style_axes(ax, "hidden size d", "GFLOPs per block (multiply-adds)", "MemoryFormer Figure 1, from memlab.flops")
    return ax


def plot_temperature(ax=None, temperatures: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0), z_max: float = 3.0,
                     points: int = 301):
    """Per-coordinate factor σ(2|z|/t) of p(z) = Π σ(2|z_i|/t) against z, one curve per temperature t."""
    ax = _axes(ax)
    z = torch.linspace(-z_max, z_max, points, dtype=torch.float64)
    for t in temperatures:
        ax.plot(z.numpy(), torch.sigmoid(2 * z.abs() / t).numpy(), label=f"t = {t:g}")
    ax.set_ylim(0.45, 1.02)
    style_axes(ax, "z_i", "σ(2|z_i| / t)", "one factor of p(z): sharper for small t")
    return ax


def plot_usage(counts: Mapping[str, torch.Tensor] | torch.Tensor, ax=None, log: bool = True):
    """Row hits sorted from most to least used (x: row rank as a fraction of rows), one curve per histogram.

    A flat curve is uniform use; a steep drop to zero means part of the memory is never read.
    """
    ax = _axes(ax)
    if isinstance(counts, torch.Tensor):
        counts = {"rows": counts}
    for name, c in counts.items():
        c = c.detach().double().reshape(-1).sort(descending=True).values
        x = (torch.arange(c.numel(), dtype=torch.float64) + 0.5) / c.numel()
        ax.plot(x.numpy(), c.numpy(), label=name)
    if log:
        ax.set_yscale("symlog", linthresh=1.0)
    style_axes(ax, "row rank / number of rows", "hits", "row usage, most-hit first")
    return ax


__all__ = [
    "FIGURE1_HIDDEN_SIZES",
    "FIGURE1_SEQ_LENS",
    "figure1_data",
    "plot_figure1",
    "plot_temperature",
    "plot_usage",
    "format_table",
]
