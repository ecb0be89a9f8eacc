"""Usage snapshots: how often every row of every memory layer was read, per table or head, at each stats step.

``memlab.lab.models.usage`` reduces a layer's row hits to a few numbers (fraction used, KL, Gini …) for
``results.json``. The explorer (``memlab.lab.explorer``) needs the histograms themselves — per hash table for
MemoryFormer (its Figure 4), per head for product keys — so training also keeps them, compactly, in the run folder:

    runs/<name>/usage_snapshots.npz      (a sweep keeps it as runs/sweeps/<study>/<key>.usage.npz)

        meta                 JSON: format, the model config, and for every memory layer its kind and sizes
        steps                the steps recorded: 0 (initialisation) and every ``stats_every`` steps
        ids                  the token ids all snapshots read (the run's first validation batch), so every step and
                             every run of one config is measured on the same bytes
        <layer>@<step>       hit counts, unsigned ints: (K, 2^τ) per table for a hash layer (``layer0.qkv``,
                             ``layer0.mb1``, ``layer0.mb2``), (H, n²) per head for a product-key layer
                             (``layer2.pkm``, ``layer2.peer``), (1, E) for MoE experts (``layer1.moe``)
        <layer>@<step>:top   product keys only: the best max(``SCORE_K``, top-k) scores of n² per head, (T, H, ·) fp16,
                             for ``SCORE_TOKENS`` tokens spread over the batch; ``:lse`` their log-normaliser over all
                             n² keys, (T, H). ``:top_flip`` / ``:lse_flip``: the same weights scored with qk-norm
                             switched (on for a layer trained without it, off for one trained with it)

The layer names are those of ``memlab.lab.models.usage.memory_layers``. The whole softmax mass over n² keys is
cheap because it factorises: log Σ_{i,j} exp(s1_i + s2_j) = logsumexp(s1) + logsumexp(s2) (``log_normalizer``).
The demo's MemoryFormer (d = 128, 4 layers, 7 snapshots) writes 0.34 MB, a Memory+ with two memory layers 0.41 MB.
Every write replaces the file atomically.
"""
from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import stats
from ..addressing.product_keys import half_scores, product_topk
from ..layers.hash_memory import HashMemory
from ..layers.product_key_memory import ProductKeyMemory
from .io import atomic_write_bytes
from .models.blocks import MemoryFormerAttention
from .models.moe import MoEFFN
from .models.usage import memory_layers

SNAPSHOT_FILE = "usage_snapshots.npz"
FORMAT = 1
#: Product-key score samples: this many tokens (spread evenly over the batch) and the best this-many scores each.
SCORE_TOKENS = 64
SCORE_K = 32


# ---------------------------------------------------------------------------------------------------------- capture
def memory_inputs(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input every memory layer of ``model`` sees while it reads ``ids`` (B, T): {layer name: (B, T, d_in)}.

    One forward pass in eval mode with pre-hooks (the same capture ``usage_counts`` does); the model's mode is kept.
    Autograd stays on for it: without a gradient, Memory+ takes a fused fast path that never calls its product-key
    sub-module, so that sub-module's hook would not fire.
    """
    layers = memory_layers(model)
    inputs: dict[str, torch.Tensor] = {}
    handles = [module.register_forward_pre_hook(lambda m, args, name=name: inputs.__setitem__(name, args[0].detach()))
               for name, module in layers.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            model(ids)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    missing = set(layers) - set(inputs)
    if missing:
        raise RuntimeError(f"memory layer(s) {sorted(missing)} were not called by the forward pass; a fast path "
                           "that skips the sub-module's forward hides them from the usage hooks")
    return inputs


def hash_module(module: torch.nn.Module) -> HashMemory | None:
    """The HashMemory that addresses for ``module`` (MemoryFormer attention hashes once, with its Q table)."""
    if isinstance(module, MemoryFormerAttention):
        return module.q
    return module if isinstance(module, HashMemory) else None


def pk_module(module: torch.nn.Module) -> ProductKeyMemory | None:
    return module if isinstance(module, ProductKeyMemory) else None


def layer_info(module: torch.nn.Module) -> dict:
    """Kind and sizes of one memory layer, as stored in a snapshot file's ``meta``."""
    if (h := hash_module(module)) is not None:
        return {"kind": "hash", "tau": h.tau, "tables": h.num_tables, "rows": 2**h.tau, "in_features": h.in_features,
                "temperature": h.temperature, "weighting": h.weighting}
    if (p := pk_module(module)) is not None:
        return {"kind": "product_keys", "n_keys": p.n_keys, "heads": p.heads, "topk": p.topk, "k_dim": p.k_dim,
                "query_norm": p.query_norm, "values_id": id(p.values), "layer_type": type(p).__name__}
    if isinstance(module, MoEFFN):
        return {"kind": "experts", "experts": module.n_experts, "topk": module.topk}
    raise TypeError(f"no usage snapshot for {type(module).__name__}")


# ---------------------------------------------------------------------------------------------------------- scores
def log_normalizer(s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """log Σ_{i,j} exp(s1_i + s2_j) over all n² product keys = logsumexp(s1) + logsumexp(s2): O(n), not O(n²)."""
    return torch.logsumexp(s1, dim=-1) + torch.logsumexp(s2, dim=-1)


def log_normalizer_bruteforce(s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """Reference for ``log_normalizer``: materialise the n² scores."""
    return torch.logsumexp((s1.unsqueeze(-1) + s2.unsqueeze(-2)).flatten(-2), dim=-1)


def scores_with_qk_norm(layer: ProductKeyMemory, x: torch.Tensor, qk_norm: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Half scores (q1·K1, q2·K2), each (..., H, n), of ``layer``'s weights with qk-norm on or off.

    ``qk_norm`` equal to the layer's own setting gives ``layer.scores(x)``. Off, for a layer trained with qk-norm:
    raw query halves against raw half-keys, unscaled. On, for a layer trained without: its queries and half-keys
    RMS-normalised (unit gain) and the scores scaled by 1/√(k_dim/2), as ``query_norm="qk"`` does — the same weights,
    so the comparison shows what the normalisation alone does to the score scale.
    """
    own = layer.query_norm == "qk"
    if qk_norm == own:
        return layer.scores(x)
    half = layer.k_dim // 2
    if own:  # switch it off
        q = layer.query(x.to(layer.query.weight.dtype)).unflatten(-1, (layer.heads, 2, half))
        keys, scale = layer.keys, 1.0
    else:  # switch it on
        q = F.rms_norm(layer.queries(x), (half,))
        keys, scale = F.rms_norm(layer.keys, (half,)), half**-0.5
    s1, s2 = half_scores(q[..., 0, :], keys[:, 0]), half_scores(q[..., 1, :], keys[:, 1])
    return s1 * scale, s2 * scale


def score_sample(layer: ProductKeyMemory, x: torch.Tensor, qk_norm: bool, k: int = SCORE_K) -> tuple[np.ndarray,
                                                                                                    np.ndarray]:
    """(best min(k, n) of the n² scores per token and head, sorted descending (T, H, k) fp16; log-normaliser (T, H))."""
    s1, s2 = scores_with_qk_norm(layer, x, qk_norm)
    top, _ = product_topk(s1, s2, min(k, layer.n_keys))
    return top.float().cpu().numpy().astype(np.float16), log_normalizer(s1, s2).float().cpu().numpy()


def sample_tokens(x: torch.Tensor, n: int = SCORE_TOKENS) -> torch.Tensor:
    """``n`` tokens of x (..., d) spread evenly over the flattened batch: (min(n, tokens), d)."""
    flat = x.reshape(-1, x.shape[-1])
    idx = torch.linspace(0, flat.shape[0] - 1, min(n, flat.shape[0]), device=flat.device).round().long()
    return flat[idx]


# ---------------------------------------------------------------------------------------------------------- counts
def compact(counts: torch.Tensor) -> np.ndarray:
    """Integer counts as the smallest unsigned dtype that holds them (uint8/16/32/64)."""
    a = counts.detach().cpu().numpy()
    if a.size and (a.min() < 0 or not np.all(a == np.round(a))):
        raise ValueError("counts must be non-negative integers")
    return a.astype(np.min_scalar_type(int(a.max()) if a.size else 0))


def layer_counts(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Hits per row, grouped: (K, 2^τ) per table, (H, n²) per head, (1, E) for MoE experts (float64)."""
    if (h := hash_module(module)) is not None:
        return stats.hash_bucket_counts(h.codes(x), h.tau)
    if (p := pk_module(module)) is not None:
        indices, _ = p.lookup(x)
        return stats.pkm_row_counts(indices, p.n_values)
    if isinstance(module, MoEFFN):
        experts, _, _ = module.route(x.reshape(-1, module.d_model))
        return stats.row_counts(experts, module.n_experts).unsqueeze(0)
    raise TypeError(f"no usage snapshot for {type(module).__name__}")


@torch.no_grad()
def take_snapshot(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, np.ndarray]:
    """{layer: counts} (and the product-key score samples, ``<layer>:top`` …) for one step, as stored in the file."""
    layers = memory_layers(model)
    inputs = memory_inputs(model, ids)
    out: dict[str, np.ndarray] = {}
    for name, module in layers.items():
        x = inputs[name]
        out[name] = compact(layer_counts(module, x))
        if (p := pk_module(module)) is not None:
            xs = sample_tokens(x)
            own = p.query_norm == "qk"
            k = max(SCORE_K, p.topk)
            out[f"{name}:top"], out[f"{name}:lse"] = score_sample(p, xs, own, k)
            out[f"{name}:top_flip"], out[f"{name}:lse_flip"] = score_sample(p, xs, not own, k)
    return out


# ---------------------------------------------------------------------------------------------------------- the file
def snapshot_meta(model: torch.nn.Module, tokens: int) -> dict:
    layers = {name: layer_info(m) for name, m in memory_layers(model).items()}
    groups: dict[int, list[str]] = {}  # product-key layers reading one value pool
    for name, info in layers.items():
        if "values_id" in info:
            groups.setdefault(info.pop("values_id"), []).append(name)
    for names in groups.values():
        for name in names:
            layers[name]["shares_values_with"] = [n for n in names if n != name]
    return {"format": FORMAT, "model_config": model.config.to_dict(), "layers": layers, "tokens": tokens,
            "score_tokens": SCORE_TOKENS, "score_k": SCORE_K}


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _key(name: str, step: int) -> str:
    """"layer0.qkv" → "layer0.qkv@300"; "layer2.pkm:top" → "layer2.pkm@300:top"."""
    layer, _, suffix = name.partition(":")
    return f"{layer}@{step}" + (f":{suffix}" if suffix else "")


def _step_of(key: str) -> int:
    return int(key.split("@", 1)[1].split(":")[0])


def write_snapshot(path: str | os.PathLike, step: int, arrays: dict[str, np.ndarray], ids: torch.Tensor,
                   meta: dict, fresh: bool = False) -> Path:
    """Add (or replace) ``step``'s arrays in the snapshot file at ``path``, atomically. ``fresh`` starts a new file
    (a run that starts at step 0: whatever an earlier run of the same name left is dropped)."""
    path = Path(path)
    old = {} if fresh or not path.exists() else read_arrays(path)
    steps = sorted({int(s) for s in old.get("steps", [])} | {int(step)})
    kept = {k: v for k, v in old.items() if "@" in k and _step_of(k) != step}
    kept.update({_key(name, step): a for name, a in arrays.items()})
    ids_np = ids.detach().cpu().numpy()
    kept.update(meta=np.array(json.dumps(meta)), steps=np.array(steps, dtype=np.int64),
                ids=ids_np.astype(np.min_scalar_type(int(ids_np.max()) if ids_np.size else 0)))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **kept)
    return atomic_write_bytes(path, buffer.getvalue())


def record_snapshot(model: torch.nn.Module, ids: torch.Tensor, step: int, run_dir: str | os.PathLike,
                    write: bool = True) -> dict[str, np.ndarray]:
    """Take ``step``'s snapshot of ``model`` on ``ids`` and store it in ``run_dir/usage_snapshots.npz`` (``write``:
    False on every rank of a values-parallel run but the first, which still has to take part in the forward pass).
    Models without memory layers (dense) write nothing."""
    if not memory_layers(model):
        return {}
    arrays = take_snapshot(model, ids)
    if write:
        write_snapshot(Path(run_dir) / SNAPSHOT_FILE, step, arrays, ids, snapshot_meta(model, ids.numel()),
                       fresh=step == 0)
    return arrays


# ---------------------------------------------------------------------------------------------------------- reading
@dataclass
class UsageSnapshots:
    """A snapshot file, read: ``steps``, ``layers`` (name → info), ``counts(layer, step)`` and the score samples."""

    path: Path
    meta: dict
    steps: list[int]
    ids: np.ndarray
    arrays: dict[str, np.ndarray] = field(repr=False)

    @property
    def layers(self) -> dict[str, dict]:
        return self.meta["layers"]

    @property
    def model_config(self) -> dict:
        return self.meta["model_config"]

    def step(self, step: int | str | None = None) -> int:
        """The recorded step nearest to ``step`` ("init" → the first, None or "final" → the last)."""
        if step is None or step == "final":
            return self.steps[-1]
        if step == "init":
            return self.steps[0]
        return min(self.steps, key=lambda s: (abs(s - int(step)), s))

    def _get(self, layer: str, step, suffix: str = "") -> np.ndarray:
        if layer not in self.layers:
            raise KeyError(f"no memory layer {layer!r} in {self.path.name}; layers: {', '.join(self.layers)}")
        key = f"{layer}@{self.step(step)}{suffix}"
        if key not in self.arrays:
            raise KeyError(f"{self.path.name} has no {key!r}")
        return self.arrays[key]

    def counts(self, layer: str, step: int | str | None = None) -> torch.Tensor:
        """Hit counts of ``layer`` at ``step`` (nearest recorded), float64 (groups, rows)."""
        return torch.from_numpy(self._get(layer, step).astype(np.float64))

    def scores(self, layer: str, step: int | str | None = None, flipped: bool = False) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
        """Product-key score sample at ``step``: (top scores (T, H, SCORE_K) float32, log-normaliser (T, H))."""
        suffix = "_flip" if flipped else ""
        return (torch.from_numpy(self._get(layer, step, f":top{suffix}").astype(np.float32)),
                torch.from_numpy(self._get(layer, step, f":lse{suffix}").astype(np.float32)))


def load_snapshots(path: str | os.PathLike) -> UsageSnapshots:
    """Read a snapshot file (or the one inside a run folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / SNAPSHOT_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"no usage snapshots at {path}; they are written by training runs with stats_every > 0 "
            "(python -m memlab train …), and kept by sweeps as <key>.usage.npz"
        )
    arrays = read_arrays(path)
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: snapshot format {meta.get('format')!r}, this memlab reads format {FORMAT}")
    steps = [int(s) for s in arrays.pop("steps")]
    return UsageSnapshots(path, meta, steps, arrays.pop("ids"), arrays)


def expected_fraction_used(tokens: float, rows: int) -> float:
    """Fraction of ``rows`` hit at least once by ``tokens`` uniform draws: 1 − (1 − 1/rows)^tokens ≈ 1 − e^(−N/rows)."""
    return 1.0 - math.exp(tokens * math.log1p(-1.0 / rows)) if rows > 1 else float(tokens > 0)
