"""Training with the values sharded over processes: the few places where ``memlab.lab.train`` asks "how many of us?".

``train.py`` calls the same hooks on one process (``SingleProcess``: they change nothing) and on P processes
(``ValuesParallel``, from ``--set values_parallel=P`` under torchrun). With P processes:

* the model is built identically on every rank (same seed), then every ``SharedValues`` becomes this rank's
  ``ShardedValues`` (columns ``column_range(d, P, rank)``): ``shard_``;
* every rank draws the same global batch and trains on its block of rows: ``local_rows`` (data parallel for the dense
  part; the memory reads exchange tokens, ``memlab.reading.sharded_bag``);
* ``backward`` scales the loss by the rank's share of the rows, so that the gradients add up to the gradient of the
  global mean loss: the dense gradients are all-reduced (summed), the value columns already hold the whole batch's
  gradient (the exchange brought every rank's tokens to every slice);
* ``clip_grad_norm_`` takes the norm over all ranks' columns (one all-reduce of a squared norm);
* ``agree`` makes every rank log the same loss (the global mean) and the same step time (the slowest rank's), so that
  early stops happen on every rank at the same step;
* checkpoints store each rank's columns (``memlab.lab.sharded_checkpoint``); loading cuts a checkpoint of any world
  size to this rank's columns (re-sharding).

The result is the one-process run, computed by P processes: the loss curves agree to fp32 rounding (sums taken in
another order), which tests/test_values_parallel.py checks. Evaluation and sampling run the whole batch on every rank
(the exchange needs every rank in every forward; the work is repeated, the results are identical).
"""
from __future__ import annotations

import atexit
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..layers.sharded_values import ShardedValues, shard_values_
from ..reading.sharded_bag import ExchangeError
from .distributed import env_world_size, init_from_env
from .io import atomic_torch_save
from .sharded_checkpoint import read_checkpoint, remove_stale_shards, save_sharded_checkpoint, slice_checkpoint_


class SingleProcess:
    """One process trains everything: every hook is the plain single-process step."""

    values_parallel = 1
    rank = 0
    world_size = 1
    is_main = True

    def shard_(self, model: nn.Module) -> nn.Module:
        return model

    def local_rows(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_grad_norm_(self, params, max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def agree(self, loss_value: float, seconds: float) -> tuple[float, float]:
        return loss_value, seconds

    def save_checkpoint(self, ckpt: dict, path: Path, optimizer: torch.optim.Optimizer) -> None:
        atomic_torch_save(ckpt, path)
        remove_stale_shards(path)  # shards of an earlier values-parallel save of this run, now unreferenced

    def load_checkpoint(self, path: Path, device, optimizer: torch.optim.Optimizer) -> dict:
        return read_checkpoint(path, device)


class ValuesParallel(SingleProcess):
    """This rank's part of a run whose values are sharded over every process of ``group`` (see the module docstring)."""

    def __init__(self, group=None):
        self.group = group
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        self.values_parallel = self.world_size
        self.is_main = self.rank == 0
        self.device = (torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl"
                       else torch.device("cpu"))
        self.share = 1.0 / self.world_size
        self.model: nn.Module | None = None
        self.tables: list[ShardedValues] = []

    def _collective(self, what: str, call) -> None:
        try:
            call()
        except RuntimeError as error:
            raise ExchangeError(f"values-parallel training: '{what}' failed on rank {self.rank} of "
                                f"{self.world_size}: another rank stopped, crashed or timed out ({error})") from error

    def shard_(self, model: nn.Module) -> nn.Module:
        norms = [type(m).__name__ for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if norms:
            raise ValueError(
                f"values_parallel={self.world_size}: the model has {norms[0]} layers, whose batch statistics would "
                "differ between ranks; use pkm_query_norm='layer' or 'qk' (or None)"
            )
        if self.device.type == "cuda":
            model.to(self.device)
        self.tables = shard_values_(model, self.group)
        if not self.tables:
            raise ValueError(
                f"values_parallel={self.world_size} shards product-key values over processes, but this model has "
                "none; use --model pkm, memoryplus or peer (MemoryFormer's tables are not sharded: "
                "memlab.layers.sharded_values.WHY_NOT_HASH_TABLES says why)"
            )
        self.model = model
        self._sharded = {id(t.weight) for t in self.tables}
        return model

    def local_rows(self, x, y):
        """This rank's block of the global batch (``torch.tensor_split`` over ranks: sizes differ by at most one)."""
        sizes = [len(part) for part in torch.tensor_split(torch.arange(x.shape[0]), self.world_size)]
        start = sum(sizes[: self.rank])
        self.share = sizes[self.rank] / x.shape[0]
        return x[start:start + sizes[self.rank]], y[start:start + sizes[self.rank]]

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of ``share · loss`` (the rank's part of the global mean), then the dense gradients summed over
        ranks in one all-reduce. The flat buffer ends with the count of gradients, so ranks that disagree on which
        parameters got one fail loudly instead of mixing up tensors."""
        (loss * self.share).backward()
        params = [p for p in self.model.parameters() if p.requires_grad and id(p) not in self._sharded]
        present = [p for p in params if p.grad is not None]
        for p in present:
            if p.grad.is_sparse:
                p.grad = p.grad.to_dense()
        flat = torch.cat([p.grad.reshape(-1) for p in present]
                         + [torch.tensor([float(len(present))], dtype=present[0].grad.dtype if present
                                         else torch.float32, device=self.device)])
        self._collective("all-reduce of the dense gradients", lambda: dist.all_reduce(flat, group=self.group))
        if int(round(float(flat[-1]))) != len(present) * self.world_size:
            raise RuntimeError(f"rank {self.rank}: ranks disagree on which parameters have a gradient; every rank "
                               "must run the same model on its rows")
        offset = 0
        for p in present:
            n = p.grad.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n

    def clip_grad_norm_(self, params, max_norm: float) -> torch.Tensor:
        """``torch.nn.utils.clip_grad_norm_`` whose norm counts every rank's columns of the sharded tables
        (squared norms all-reduced) and the replicated parameters once. Sparse gradients are coalesced first."""
        params = [p for p in params if p.grad is not None]
        sharded_sq = torch.zeros((), dtype=torch.float64, device=self.device)
        local_sq = torch.zeros((), dtype=torch.float64, device=self.device)
        for p in params:
            if p.grad.is_sparse:
                p.grad = p.grad.coalesce()
            g = p.grad.values() if p.grad.is_sparse else p.grad
            sq = torch.linalg.vector_norm(g).double().to(self.device) ** 2
            if id(p) in self._sharded:
                sharded_sq = sharded_sq + sq
            else:
                local_sq = local_sq + sq
        self._collective("all-reduce of the value gradients' norm",
                         lambda: dist.all_reduce(sharded_sq, group=self.group))
        total = torch.sqrt(sharded_sq + local_sq).float()
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for p in params:
            (p.grad.values() if p.grad.is_sparse else p.grad).mul_(coef.to(p.grad.device, p.grad.dtype))
        return total

    def agree(self, loss_value: float, seconds: float) -> tuple[float, float]:
        """(the global mean loss, the slowest rank's step time), the same on every rank (one all-gather)."""
        mine = torch.tensor([loss_value * self.share, seconds], dtype=torch.float64, device=self.device)
        every = [torch.empty_like(mine) for _ in range(self.world_size)]
        self._collective("all-gather of the step's loss", lambda: dist.all_gather(every, mine, group=self.group))
        every = torch.stack(every).cpu()
        return float(every[:, 0].sum()), float(every[:, 1].max())

    def save_checkpoint(self, ckpt: dict, path: Path, optimizer: torch.optim.Optimizer) -> None:
        save_sharded_checkpoint(ckpt, path, self.model, optimizer, self.group)

    def load_checkpoint(self, path: Path, device, optimizer: torch.optim.Optimizer) -> dict:
        return slice_checkpoint_(read_checkpoint(path, device), self.model, optimizer)


def parallel_for(values_parallel: int, device: torch.device) -> SingleProcess:
    """The hooks for a run: ``SingleProcess`` when ``values_parallel`` is 1, else ``ValuesParallel`` over all processes
    (joining torchrun's process group if none exists yet). The world size must equal ``values_parallel``."""
    if values_parallel == 1:
        if env_world_size() > 1 and not dist.is_initialized():
            raise ValueError(
                f"torchrun started {env_world_size()} processes but values_parallel=1: they would train the same "
                f"model side by side into one run folder. Add --set values_parallel={env_world_size()} to shard the "
                "values over them (memlab has no plain data parallelism), or run one process without torchrun"
            )
        return SingleProcess()
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else env_world_size()
    if world != values_parallel:
        raise ValueError(
            f"values_parallel={values_parallel} shards the values over {values_parallel} processes, but this run has "
            f"{world}: start it with `torchrun --nproc-per-node {values_parallel} -m memlab train ... --set "
            f"values_parallel={values_parallel}`, or set values_parallel={world} (a checkpoint re-shards on --resume)"
        )
    if not dist.is_initialized():
        init_from_env(device)
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return ValuesParallel()

