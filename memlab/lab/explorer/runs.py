"""A trained run as the explorer reads it: its usage snapshots, its configs, and (when kept) its checkpoint.

    run = load_run_data("runs/demo/memoryformer")                 # a run folder (memlab train, the demo, a notebook)
    run = load_run_data("runs/sweeps/mf-hash-input/<key>.json")    # one (point, seed) of a sweep
    run.snapshots.counts("layer0.qkv", step=300)                   # (K, 2^τ) hits per table
    x = layer_activations(run, "layer0.qkv")                       # what the layer hashed, from the checkpoint

Only the run's own files are read: ``usage_snapshots.npz`` (a sweep keeps it as ``<key>.usage.npz`` beside
``<key>.json``), ``results.json`` or the sweep record for the final metrics, ``checkpoint.pt`` for activations. The
model at initialisation is rebuilt from the config and seed (``build_run`` seeds torch, then builds the model), so
it needs no file at all; sweeps delete their checkpoints, so a sweep point has snapshots and init, not final weights.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models import GPT, ModelConfig
from ..snapshots import SNAPSHOT_FILE, UsageSnapshots, load_snapshots, memory_inputs

#: Suffix a sweep gives the snapshot file of a point: runs/sweeps/<study>/<key>.usage.npz beside <key>.json.
SWEEP_SNAPSHOT_SUFFIX = ".usage.npz"


@dataclass
class RunData:
    """One run, read: ``name``, ``path`` (folder or sweep record), ``snapshots``, ``seed``, ``results`` (final
    metrics when the run finished: val_ppl …), ``checkpoint`` (a path, or None when none was kept)."""

    name: str
    path: Path
    snapshots: UsageSnapshots
    seed: int
    results: dict
    checkpoint: Path | None
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # layer inputs per "init"/"final"

    @property
    def model_config(self) -> dict:
        return self.snapshots.model_config

    @property
    def steps(self) -> list[int]:
        return self.snapshots.steps

    def layers(self, kind: str | None = None) -> list[str]:
        """Memory layer names (``layer0.qkv`` …), optionally only of one kind: "hash", "product_keys", "experts"."""
        return [n for n, info in self.snapshots.layers.items() if kind is None or info["kind"] == kind]

    def __repr__(self) -> str:
        return (f"RunData({self.name!r}, model={self.model_config['model']!r}, steps={self.steps}, "
                f"checkpoint={'yes' if self.checkpoint else 'no'})")


def load_run_data(path: str | os.PathLike) -> RunData:
    """Read a run folder, a sweep point (``<key>.json`` or ``<key>.usage.npz``) or a bare snapshot file."""
    path = Path(path)
    if path.is_dir():
        snapshots = load_snapshots(path / SNAPSHOT_FILE)
        results = json.loads((path / "results.json").read_text()) if (path / "results.json").exists() else {}
        seed = (results.get("train_config") or {}).get("seed")
        checkpoint = path / "checkpoint.pt" if (path / "checkpoint.pt").exists() else None
        if seed is None and checkpoint is not None:
            seed = torch.load(checkpoint, map_location="cpu", weights_only=False)["train_config"]["seed"]
        return RunData(path.name, path, snapshots, int(seed or 0), _metrics(results), checkpoint)
    name = path.name
    if name.endswith(SWEEP_SNAPSHOT_SUFFIX):
        path = path.with_name(name[: -len(SWEEP_SNAPSHOT_SUFFIX)] + ".json")
    if path.suffix == ".json":
        if not path.exists():
            raise FileNotFoundError(f"no sweep result at {path}")
        record = json.loads(path.read_text())
        snapshot_path = path.with_name(path.stem + SWEEP_SNAPSHOT_SUFFIX)
        snapshots = load_snapshots(snapshot_path)
        label = f"{record.get('study', 'sweep')}: {record.get('point', path.stem)} seed {record.get('seed')}"
        return RunData(label, path, snapshots, int(record["train_config"]["seed"]),
                       _metrics(record.get("results") or {}), None)
    if path.suffix == ".npz":
        return RunData(path.stem, path, load_snapshots(path), 0, {}, None)
    raise FileNotFoundError(f"{path} is neither a run folder, a sweep result (<key>.json) nor a snapshot file")


def _metrics(results: dict) -> dict:
    return {k: results[k] for k in ("val_ppl", "val_loss", "fact_recall", "steps", "tokens_per_s") if k in results}


def as_run(run) -> RunData:
    """A RunData passes through; a path is loaded."""
    return run if isinstance(run, RunData) else load_run_data(run)


def load_runs(runs: dict) -> dict[str, RunData]:
    """{label: RunData} from {label: path or RunData}; a run whose files cannot be read is left out with a warning
    (a dashboard over a folder of runs should not fail on one broken file)."""
    import warnings

    loaded = {}
    for label, run in runs.items():
        try:
            loaded[label] = as_run(run)
        except (OSError, ValueError, KeyError) as e:
            warnings.warn(f"skipping run {label!r}: {type(e).__name__}: {e}", stacklevel=2)
    return loaded


def find_runs(root: str | os.PathLike = "runs") -> dict[str, Path]:
    """{label: path} of every run under ``root`` that has usage snapshots: run folders and sweep points."""
    root = Path(root)
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for snap in sorted(root.rglob(SNAPSHOT_FILE)):
        if snap.parent.parent.name == "work":  # a sweep point still training: its <key>.usage.npz comes when done
            continue
        found[str(snap.parent.relative_to(root))] = snap.parent
    for snap in sorted(root.rglob("*" + SWEEP_SNAPSHOT_SUFFIX)):
        record = snap.with_name(snap.name[: -len(SWEEP_SNAPSHOT_SUFFIX)] + ".json")
        if record.exists():
            info = json.loads(record.read_text())
            found[f"{info.get('study')}: {info.get('point')} seed {info.get('seed')}"] = record
    return found


# ---------------------------------------------------------------------------------------------------------- models
def model_at(run, which: str = "final") -> GPT:
    """The run's model: ``"init"`` rebuilt from config and seed (bit-identical to the run's step 0; the global RNG is
    left as it was), ``"final"`` from its checkpoint (absent for sweep points: they keep snapshots, not weights)."""
    run = as_run(run)
    config = ModelConfig.from_dict(run.model_config)
    if which == "init":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(run.seed)
            return GPT(config).eval()
    if which != "final":
        raise ValueError(f"which must be 'init' or 'final', got {which!r}")
    if run.checkpoint is None:
        raise FileNotFoundError(
            f"run {run.name!r} kept no checkpoint (sweeps delete theirs), so its trained activations cannot be "
            "recomputed; use which='init', or a run folder trained with python -m memlab train"
        )
    from ..train import load_checkpoint

    model, _ = load_checkpoint(run.checkpoint)
    return model.eval()


def snapshot_ids(run) -> torch.Tensor:
    """The token ids every snapshot of the run read (its first validation batch), (B, T) int64."""
    return torch.from_numpy(as_run(run).snapshots.ids.astype("int64"))


def layer_activations(run, layer: str, which: str = "final") -> torch.Tensor:
    """What memory layer ``layer`` of the run reads on the snapshot batch: (tokens, d_in) float32 — for a hash
    layer, the x whose chunks it hashes. ``which``: "final" (checkpoint) or "init". One forward pass serves every
    layer: the inputs are kept in ``run.cache``."""
    run = as_run(run)
    if layer not in run.snapshots.layers:
        raise KeyError(f"no memory layer {layer!r} in run {run.name!r}; layers: {', '.join(run.snapshots.layers)}")
    if which not in run.cache:
        inputs = memory_inputs(model_at(run, which), snapshot_ids(run))
        run.cache[which] = {name: x.reshape(-1, x.shape[-1]).float() for name, x in inputs.items()}
    return run.cache[which][layer]
