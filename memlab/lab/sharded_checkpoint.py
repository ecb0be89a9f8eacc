"""Checkpoints of a values-parallel run: each rank stores its own columns, and any world size can resume them.

Layout of ``runs/<name>/`` after a save at step S by P ranks:

    checkpoint.pt                      everything but the value columns (dense weights, their optimizer state, RNGs,
                                       progress, configs) and a manifest ``values_shards`` naming the P files below
    checkpoint.values{p}of{P}.step{S}.pt   rank p's columns of every sharded table and their optimizer moments

Saving: every rank writes its shard file (atomically), all wait at a barrier, then rank 0 writes ``checkpoint.pt``
(atomically) and deletes shard files no manifest names any more. A run killed mid-save leaves the previous
``checkpoint.pt`` with the shard files it names: step-numbered names mean a newer shard never overwrites one that an
older manifest still needs.

Loading (``read_checkpoint``): ``checkpoint.pt`` plus its shard files, the columns concatenated back — the same dict a
one-process run saves, whatever P was. ``slice_checkpoint_`` then cuts it to the columns the loading rank holds under
its own world size, so a run saved by 2 ranks resumes on 1 or on 2 (or 3) ranks. Each rank holds the whole table for
a moment while loading: fine at memlab's scale; a table larger than one machine would read only its own columns of
each shard.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..layers.sharded_values import ShardedValues
from .io import atomic_torch_save

MANIFEST = "values_shards"


def shard_file_name(path: Path, rank: int, world_size: int, step: int) -> str:
    return f"{path.stem}.values{rank}of{world_size}.step{step}{path.suffix}"


def sharded_tables(model: nn.Module) -> dict[str, ShardedValues]:
    """state_dict key → ``ShardedValues`` for every sharded table of ``model``, under every name it has (a pool read
    by three layers appears under four keys: the model's and each layer's)."""
    return {f"{name}.weight": m for name, m in model.named_modules(remove_duplicate=False)
            if isinstance(m, ShardedValues)}


def optimizer_indices(optimizer: torch.optim.Optimizer, params) -> dict[int, torch.Tensor]:
    """Index → parameter, for ``params``, in the numbering ``optimizer.state_dict()`` uses (parameters in group order)."""
    wanted = {id(p) for p in params}
    found, i = {}, 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) in wanted:
                found[i] = p
            i += 1
    return found


def save_sharded_checkpoint(ckpt: dict, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                            group=None) -> None:
    """Write a checkpoint dict built on a values-parallel rank: shard files by every rank, ``path`` by rank 0.

    A collective: every rank of ``group`` calls it with its own ``ckpt`` (its model and optimizer state)."""
    path = Path(path)
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    step = ckpt["state"]["step"]
    tables = sharded_tables(model)
    weights = {id(m.weight): m.weight for m in tables.values()}
    indices = sorted(optimizer_indices(optimizer, weights.values()))
    state = ckpt["optimizer"]["state"]
    shard = {"rank": rank, "values_parallel": world, "step": step,
             "columns": {key: list(m.columns) for key, m in tables.items()},
             "model": {key: ckpt["model"][key] for key in tables},
             "optimizer_state": {i: state[i] for i in indices if i in state}}
    names = [shard_file_name(path, r, world, step) for r in range(world)]
    atomic_torch_save(shard, path.with_name(names[rank]))
    dist.barrier(group)
    if rank == 0:
        main = dict(ckpt)
        main["model"] = type(ckpt["model"])((k, v) for k, v in ckpt["model"].items() if k not in tables)
        if hasattr(ckpt["model"], "_metadata"):  # module versions, which load_state_dict reads
            main["model"]._metadata = ckpt["model"]._metadata
        main["optimizer"] = {**ckpt["optimizer"], "state": {i: s for i, s in state.items() if i not in indices}}
        main[MANIFEST] = {"values_parallel": world, "step": step, "files": names, "model_keys": list(tables),
                          "optimizer_indices": indices, "dims": {key: m.dim for key, m in tables.items()}}
        atomic_torch_save(main, path)
        remove_stale_shards(path, keep=names)
    dist.barrier(group)


def remove_stale_shards(path: Path, keep=()) -> list[str]:
    """Delete ``<stem>.values*`` shard files beside ``path`` that ``keep`` does not name; returns what was deleted."""
    path = Path(path)
    removed = []
    for f in path.parent.glob(f"{path.stem}.values*of*.step*{path.suffix}"):
        if f.name not in keep:
            f.unlink(missing_ok=True)
            removed.append(f.name)
    return removed


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """A checkpoint as one process saves it: ``torch.load`` of ``path``, with the value columns of a values-parallel
    save read from its shard files and concatenated back (the manifest is removed)."""
    path = Path(path)
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    manifest = ckpt.pop(MANIFEST, None)
    if manifest is None:
        return ckpt
    shards = []
    for name in manifest["files"]:
        f = path.with_name(name)
        if not f.exists():
            raise FileNotFoundError(
                f"{path} keeps its value table in {manifest['values_parallel']} shard files and {name} is missing; "
                f"copy a run folder whole (checkpoint.pt and every {path.stem}.values*.pt beside it)"
            )
        shard = torch.load(f, map_location=map_location, weights_only=False)
        if shard["step"] != manifest["step"]:
            raise ValueError(f"{f.name} holds step {shard['step']} but {path.name} step {manifest['step']}: the "
                             "run folder mixes two saves; restore both from the same copy")
        shards.append(shard)
    for key in manifest["model_keys"]:
        ckpt["model"][key] = torch.cat([s["model"][key] for s in shards], dim=1)
    for i in manifest["optimizer_indices"]:
        if i not in shards[0]["optimizer_state"]:
            continue  # the optimizer had not stepped this table yet
        merged = {}
        for name, value in shards[0]["optimizer_state"][i].items():
            if torch.is_tensor(value) and value.dim() == 2:  # moments shaped like the slice
                merged[name] = torch.cat([s["optimizer_state"][i][name] for s in shards], dim=1)
            else:
                merged[name] = value  # the step count: the same on every rank
        ckpt["optimizer"]["state"][i] = merged
    return ckpt


def slice_checkpoint_(ckpt: dict, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Cut a whole-table checkpoint (``read_checkpoint``) to the columns this rank's ``ShardedValues`` hold, in place:
    the model's table weights and the optimizer moments of those tables. Returns ``ckpt``."""
    tables = sharded_tables(model)
    for key, m in tables.items():
        full = ckpt["model"].get(key)
        if full is None or full.dim() != 2 or tuple(full.shape) != (m.n_values, m.dim):
            got = None if full is None else tuple(full.shape)
            raise ValueError(f"checkpoint entry {key} is {got}, expected the whole table ({m.n_values}, {m.dim})")
        start, stop = m.columns
        ckpt["model"][key] = full[:, start:stop].clone()
    if optimizer is not None:
        by_weight = {id(m.weight): m for m in tables.values()}
        for i, p in optimizer_indices(optimizer, [m.weight for m in tables.values()]).items():
            entry = ckpt["optimizer"]["state"].get(i)
            if entry is None:
                continue
            start, stop = by_weight[id(p)].columns
            ckpt["optimizer"]["state"][i] = {
                name: (value[:, start:stop].clone() if torch.is_tensor(value) and value.dim() == 2 else value)
                for name, value in entry.items()
            }
    return ckpt
