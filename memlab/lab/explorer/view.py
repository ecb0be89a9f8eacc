"""What every explorer function returns: a ``View`` — the figure, the statistics it shows, and the arrays it drew.

A dashboard (``dashboard.py``) only re-calls one such function when a control moves and shows the View's image and
table. A notebook calls the same function with explicit arguments (the *static call*) and asserts on ``stats`` and
``data``: both are plain numbers and tensors, so a test can check that moving a control changes them as it should.
"""
from __future__ import annotations

import html
import io
import math
from dataclasses import dataclass, field

import torch

#: Pixel density of a dashboard image: about 800 × 500 px for the default figure sizes.
DPI = 80


@dataclass
class View:
    """One rendering of an explorer: ``figure`` (matplotlib), ``stats`` (name → number or text), ``data`` (name →
    tensor or list: what each panel drew), ``title``. In a notebook the View displays as its figure."""

    title: str
    figure: object
    stats: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict, repr=False)

    def png(self, dpi: int = DPI) -> bytes:
        """The figure as PNG bytes (what a dashboard shows)."""
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=dpi)
        return buffer.getvalue()

    def _repr_png_(self) -> bytes:
        return self.png()

    def table(self) -> str:
        """``stats`` as aligned text lines (floats with 4 significant digits)."""
        width = max((len(k) for k in self.stats), default=0)
        return "\n".join(f"{k:<{width}}  {format_value(v)}" for k, v in self.stats.items())

    def html(self) -> str:
        """``stats`` as a compact HTML grid, three name/value pairs a line (what a dashboard shows under the figure)."""
        cells = "".join(f"<span>{html.escape(str(k))}</span><span style='text-align:right;padding-right:2em'>"
                        f"{html.escape(format_value(v))}</span>" for k, v in self.stats.items())
        grid = ("display:grid;grid-template-columns:repeat(3, max-content max-content);column-gap:0.6em;"
                "font-family:monospace;font-size:11px;line-height:1.35")
        return f"<b>{html.escape(self.title)}</b><div style='{grid}'>{cells}</div>"


def format_value(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def new_figure(rows: int, cols: int, width: float = 10.0, height: float = 6.0):
    """(figure, 2-D array of axes) without pyplot: nothing is registered globally, so a dashboard redrawn a thousand
    times does not accumulate open figures."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))  # fixed margins: a constrained layout would double the drawing time
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.1 if rows > 1 else 0.17, top=0.93 if rows > 1 else 0.82,
                        wspace=0.32, hspace=0.5)
    return fig, axes


def bucket_bars(ax, counts: torch.Tensor, color: str = "tab:blue"):
    """A histogram over row ids drawn as one filled step outline (hundreds of bars as one artist: fast to draw).

    The outline has a line width of its own: with more rows than pixels, a filled bar narrower than a pixel would be
    dropped by antialiasing, and a histogram of a few tall spikes would lose exactly the spikes."""
    values = counts.detach().double().reshape(-1).numpy()
    edges = torch.arange(values.size + 1, dtype=torch.float64).numpy() - 0.5
    return ax.stairs(values, edges, fill=True, facecolor=color, edgecolor=color, linewidth=0.8)


def lorenz_curve(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lorenz curve of a histogram: x = share of rows (least-used first), y = share of hits they take; both start at 0.

    The diagonal is perfectly even use; the area between it and the curve is half the Gini coefficient
    (``memlab.stats.gini``).
    """
    c = counts.detach().double().reshape(-1).sort().values
    total = c.sum()
    if total <= 0:
        raise ValueError("a Lorenz curve needs at least one hit; the counts are all zero")
    y = torch.cat([torch.zeros(1, dtype=torch.float64), c.cumsum(0) / total])
    x = torch.arange(c.numel() + 1, dtype=torch.float64) / c.numel()
    return x, y


def gini_from_lorenz(x: torch.Tensor, y: torch.Tensor) -> float:
    """1 − 2·(area under the Lorenz curve), trapezoid rule: equals ``memlab.stats.gini`` of the same counts."""
    return float(1 - 2 * torch.trapezoid(y, x))


def draw_stats(ax, stats: dict, keys: list[str] | None = None, title: str = "statistics") -> None:
    """Write ``stats`` (or the chosen ``keys``) as text into an axes with no frame."""
    keys = list(stats) if keys is None else keys
    lines = [f"{k}: {format_value(stats[k])}" for k in keys if k in stats]
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    ax.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=8, transform=ax.transAxes)
