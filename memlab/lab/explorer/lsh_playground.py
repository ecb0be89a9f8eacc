"""LSH playground: sign hashing (MemoryFormer §2.1) on inputs you choose, against uniform bucket use.

    view = lsh_playground(tau=8, inputs="correlated", rank=2, n_tokens=4096)     # the static call
    view.stats["fraction_used"], view.data["counts"]                              # what it measured
    lsh_playground_widget(activations={"demo layer0.qkv": x})                    # the same, with controls

Tokens x ∈ R^d are cut into K = d/τ chunks and every chunk is hashed to its τ sign bits, one table per chunk, as in
``HashMemory``. Inputs: ``"isotropic"`` N(0, I), ``"correlated"`` a Gaussian of rank r (x = A g / √r with A a fixed
random d × r matrix and g ~ N(0, I_r)), or any named set of real activations (``runs.layer_activations``). Shown:
the bucket histogram of one table against the uniform level N/2^τ and its Lorenz curve; the distribution of p(z) and
of the row weight (the p(z) summed over the tokens that hit a row: score-weighted use); how often two tokens collide
against the angle between their chunks, next to random-hyperplane LSH's 1 − θ/π per bit and (1 − θ/π)^τ per bucket
(notebook 01); and the usage statistics (``memlab.stats``) averaged over tables, with the floor uniform hashing shows
at the same N.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ... import stats
from ...addressing.hashing import bucket_probability, sign_codes
from ...addressing.lsh import collision_probability
from .diagnostics import kl_decomposition, max_buckets_for_rank, mean_summary
from .view import View, bucket_bars, draw_stats, lorenz_curve, new_figure

SYNTHETIC_INPUTS = ("isotropic", "correlated")
#: Chunks (tables) of a synthetic token: d = TABLES · τ.
TABLES = 8
N_TOKENS = (256, 512, 1024, 2048, 4096, 8192, 16384)
ANGLE_BINS = 18


def synthetic_inputs(kind: str, n_tokens: int, dim: int, rank: int = 2, seed: int = 0) -> torch.Tensor:
    """(n_tokens, dim) float64 inputs: "isotropic" N(0, I) or "correlated" of rank ``rank`` (x = A g / √r)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "isotropic":
        return torch.randn(n_tokens, dim, generator=gen, dtype=torch.float64)
    if kind == "correlated":
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        a = torch.randn(dim, rank, generator=gen, dtype=torch.float64)
        return torch.randn(n_tokens, rank, generator=gen, dtype=torch.float64) @ a.T / math.sqrt(rank)
    raise ValueError(f"inputs={kind!r} is not one of {SYNTHETIC_INPUTS} (or a name of the activations passed in)")


def valid_taus(dim: int, low: int = 2, high: int = 12) -> list[int]:
    """τ values in [low, high] that divide ``dim``."""
    return [t for t in range(low, high + 1) if dim % t == 0]


def collision_by_angle(z: torch.Tensor, codes: torch.Tensor, pairs: int = 20000, bins: int = ANGLE_BINS,
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token pairs, every table: angle between their chunks, whether they share the bucket, and the share of
    their τ bits that agree, averaged per angle bin. z (N, K, τ), codes (N, K) → {"theta", "pairs", "bucket", "bit"}
    (bins with no pair are NaN)."""
    n, _, tau = z.shape
    gen = torch.Generator().manual_seed(seed)
    i = torch.randint(n, (pairs,), generator=gen)
    j = (i + torch.randint(1, max(n, 2), (pairs,), generator=gen)) % n
    a, b = z[i].double(), z[j].double()
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)
    theta = cos.clamp(-1, 1).acos().reshape(-1)
    same = (codes[i] == codes[j]).double().reshape(-1)
    bit = ((a >= 0) == (b >= 0)).double().mean(-1).reshape(-1)
    which = (theta / math.pi * bins).long().clamp(0, bins - 1)
    count = torch.bincount(which, minlength=bins).double()
    centre = (torch.arange(bins, dtype=torch.float64) + 0.5) * math.pi / bins
    safe = count.clamp_min(1)
    nan = torch.full((bins,), float("nan"), dtype=torch.float64)
    return {"theta": centre, "pairs": count,
            "bucket": torch.where(count > 0, torch.bincount(which, same, bins) / safe, nan),
            "bit": torch.where(count > 0, torch.bincount(which, bit, bins) / safe, nan)}


def lsh_playground(tau: int = 8, temperature: float = 1.0, layernorm: bool = False, inputs: str = "isotropic",
                   rank: int = 2, n_tokens: int = 4096, table: int = 0, seed: int = 0,
                   activations: dict[str, torch.Tensor] | None = None, tables: int = TABLES,
                   pairs: int = 20000) -> View:
    """Hash ``n_tokens`` inputs with τ-bit sign hashing and show how evenly the buckets are used (module docstring).

    ``layernorm`` normalises each token (no affine) before hashing, as the block's pre-norm does. ``table``: which
    table the histogram, Lorenz curve and row weights show (statistics average over all tables).
    """
    activations = activations or {}
    if inputs in activations:
        x = activations[inputs].reshape(-1, activations[inputs].shape[-1]).double()[:n_tokens]
    else:
        x = synthetic_inputs(inputs, n_tokens, tables * tau, rank, seed)
    n, dim = x.shape
    if dim % tau:
        raise ValueError(f"tau={tau} does not divide the input width {dim}; try tau in {valid_taus(dim)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if layernorm:
        x = F.layer_norm(x, (dim,))
    k = dim // tau
    if not 0 <= table < k:
        raise ValueError(f"table={table} is out of range: {k} tables (0 … {k - 1})")
    z = x.reshape(n, k, tau)
    codes = sign_codes(z)
    counts = stats.hash_bucket_counts(codes, tau)  # (K, 2^τ)
    p = bucket_probability(z, temperature)  # (N, K)
    weights = torch.stack([stats.row_counts(codes[:, t], 2**tau, p[:, t]) for t in range(k)])  # Σ p per row
    collisions = collision_by_angle(z, codes, pairs, seed=seed)
    split = kl_decomposition(counts)

    summary = mean_summary(counts)
    rows = 2**tau
    result = {
        "tokens": n, "width": dim, "tables": k, "rows_per_table": rows,
        "fraction_used": summary["fraction_used"],
        "uniform_fraction_used": 1 - math.exp(n * math.log1p(-1 / rows)),
        "entropy": summary["entropy"], "kl_uniform": summary["kl_uniform"],
        "kl_from_bit_bias": float(split["bias"].mean()), "kl_from_bit_dependence": float(split["dependence"].mean()),
        "kl_score_weighted": sum(stats.kl_from_uniform(w) for w in weights) / k,
        "gini": summary["gini"], "top_50": summary["top_50"], "top_90": summary["top_90"],
        "mean_p": float(p.mean()),
    }
    if inputs == "correlated":
        result["max_fraction_for_rank"] = max_buckets_for_rank(tau, rank) / rows

    fig, axes = new_figure(2, 3, 11, 6.2)
    c = counts[table]
    ax = axes[0, 0]
    bucket_bars(ax, c, color="tab:blue")
    ax.axhline(n / rows, color="k", ls="--", lw=1, label=f"uniform {n / rows:.3g}")
    ax.set(xlabel="bucket h(z)", ylabel="tokens", title=f"table {table}: bucket histogram")
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[0, 1]
    lx, ly = lorenz_curve(c)
    ax.plot(lx.numpy(), ly.numpy(), label=f"table {table} (Gini {stats.gini(c):.2f})")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="uniform")
    ax.set(xlabel="share of buckets (least used first)", ylabel="share of tokens", title="Lorenz curve")
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[0, 2]
    lo = math.log10(2.0**-tau)
    ax.hist(p.log10().reshape(-1).numpy(), bins=40, range=(lo, 0), color="tab:green", histtype="stepfilled")
    ax.set(xlabel="log10 p(z)", ylabel="chunks", title=f"p(z) = Π σ(2|z_i|/t), t = {temperature:g}")
    ax = axes[1, 0]
    w = weights[table]
    ax.hist(w.numpy(), bins=40, color="tab:orange", histtype="stepfilled")
    ax.axvline(float(w.mean()), color="k", ls="--", lw=1, label=f"mean {float(w.mean()):.3g}")
    ax.set(xlabel="row weight Σ p(z) of its tokens", ylabel="buckets", title="row weight (score-weighted use)")
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[1, 1]
    th = collisions["theta"]
    ok = collisions["pairs"] >= 20
    deg = (th * 180 / math.pi).numpy()
    ax.plot(deg, collision_probability(th).numpy(), "k--", lw=1, label="1 − θ/π (one random plane)")
    ax.plot(deg, collision_probability(th, tau).numpy(), "k:", lw=1, label="(1 − θ/π)^τ")
    ax.plot(deg[ok.numpy()], collisions["bit"][ok].numpy(), "o-", ms=3, label="bits agreeing (measured)")
    ax.plot(deg[ok.numpy()], collisions["bucket"][ok].numpy(), "s-", ms=3, label="same bucket (measured)")
    ax.set(xlabel="angle between two chunks (degrees)", ylabel="probability", title="collisions vs angle",
           ylim=(-0.02, 1.02))
    ax.legend(fontsize=6, loc="upper right")
    draw_stats(axes[1, 2], result, title=f"{inputs}, τ = {tau}, N = {n}" + (", LayerNorm" if layernorm else ""))
    data = {"counts": counts, "p": p, "row_weight": weights, "collisions": collisions, "x": x}
    return View(f"LSH playground: {inputs}, τ = {tau}", fig, result, data)


def lsh_playground_widget(activations: dict[str, torch.Tensor] | None = None, **initial):
    """The playground with controls: τ, temperature, LayerNorm, inputs (isotropic, correlated, each named set of
    ``activations``), rank, number of tokens, table. ``initial`` sets starting values. Returns a ``Dashboard``."""
    import ipywidgets as widgets

    from .dashboard import Dashboard

    activations = dict(activations or {})
    start = {"tau": 8, "temperature": 1.0, "layernorm": False, "inputs": "isotropic", "rank": 2, "n_tokens": 4096,
             "table": 0, **initial}
    style = {"description_width": "90px"}
    slider = dict(continuous_update=False, style=style)
    controls = {
        "inputs": widgets.Dropdown(options=list(SYNTHETIC_INPUTS) + list(activations), value=start["inputs"],
                                   description="inputs", style=style),
        "tau": widgets.SelectionSlider(options=list(range(2, 13)), value=start["tau"], description="τ (bits)",
                                       **slider),
        "temperature": widgets.FloatLogSlider(value=start["temperature"], base=10, min=-1, max=1, step=0.1,
                                              description="temperature", **slider),
        "layernorm": widgets.Checkbox(value=start["layernorm"], description="LayerNorm before hashing",
                                      style=style),
        "rank": widgets.IntSlider(value=start["rank"], min=1, max=16, description="rank",
                                  tooltip="rank of the correlated Gaussian inputs", **slider),
        "n_tokens": widgets.SelectionSlider(options=list(N_TOKENS), value=start["n_tokens"], description="tokens",
                                            **slider),
        "table": widgets.IntSlider(value=start["table"], min=0, max=TABLES - 1, description="table", **slider),
    }

    def link(dash: Dashboard, changed: str) -> None:
        c = dash.controls
        dim = activations[c["inputs"].value].shape[-1] if c["inputs"].value in activations else None
        taus = valid_taus(dim) if dim else list(range(2, 13))
        if list(c["tau"].options) != taus:
            keep = c["tau"].value if c["tau"].value in taus else min(taus, key=lambda t: abs(t - c["tau"].value))
            c["tau"].options = taus
            c["tau"].value = keep
        tables = dim // c["tau"].value if dim else TABLES
        c["table"].max = tables - 1
        c["table"].value = min(c["table"].value, tables - 1)
        c["rank"].disabled = c["inputs"].value != "correlated"

    return Dashboard(lsh_playground, controls, fixed={"activations": activations}, link=link,
                     title="LSH playground: sign hashing against uniform bucket use")
