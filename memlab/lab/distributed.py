"""Starting and joining processes for memory parallelism: torchrun's environment, or ranks spawned from Python.

Two ways in:

* ``torchrun --nproc-per-node 2 -m memlab train --model memoryplus --set values_parallel=2 ...``: torchrun starts the
  processes and sets RANK / WORLD_SIZE / MASTER_ADDR; ``init_from_env`` joins them (gloo on CPU, NCCL on CUDA).
* ``run_ranks(fn, 2, args)`` from a test, a notebook or a bench: starts ``world_size`` processes with
  ``torch.multiprocessing`` (spawn), joins them in a gloo group (a FileStore in a temporary folder: no port to pick),
  calls ``fn(*args)`` on each and returns what each rank returned. ``fn`` must be importable (defined in a module, not
  in a notebook cell): spawned processes import it by name.

Nothing waits forever. The process group has a timeout (``timeout_s``): a collective whose peer died fails at once
("connection reset"), one whose peer hangs fails after the timeout, and memlab's exchange turns either into an
``ExchangeError`` naming the step. ``run_ranks`` also has a wall-clock deadline: a rank still running at the deadline
is killed, and ``RanksFailed`` reports every rank's outcome (returned, raised — with its message —, killed by a
signal, or timed out).
"""
from __future__ import annotations

import datetime
import os
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

#: Collective timeout (seconds) for groups memlab creates; the environment variable overrides it.
TIMEOUT_ENV = "MEMLAB_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 300.0


def timeout_s() -> float:
    return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 of the default group, or of torchrun's environment before the group exists; True on one process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def init_from_env(device: torch.device, timeout: float | None = None) -> None:
    """Join the process group torchrun describes (env://): gloo for CPU tensors, NCCL for CUDA (each process on GPU
    LOCAL_RANK). Does nothing when a group already exists (a test or ``run_ranks`` made it)."""
    if dist.is_initialized():
        return
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; values_parallel needs it")
    if "MASTER_ADDR" not in os.environ:
        raise ValueError(
            f"WORLD_SIZE={env_world_size()} but no MASTER_ADDR: start the processes with torchrun "
            "(torchrun --nproc-per-node P -m memlab train ...), which sets both"
        )
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout or timeout_s()))


# ------------------------------------------------------------------------------------------------ spawned ranks
@dataclass
class RankOutcome:
    """What one rank of ``start_ranks`` did: ``ok`` with ``value``, or ``error`` (a message; ``traceback`` too when
    it raised), and its exit code (negative: killed by that signal), wall time and whether it ran out of time."""

    rank: int
    ok: bool
    value: Any = None
    error: str | None = None
    traceback: str | None = None
    exitcode: int | None = None
    seconds: float = float("nan")
    timed_out: bool = False

    def describe(self) -> str:
        if self.ok:
            return f"rank {self.rank}: returned after {self.seconds:.1f} s"
        return f"rank {self.rank}: {self.error}"


class RanksFailed(RuntimeError):
    """At least one rank of ``run_ranks`` raised, died or ran out of time; ``outcomes`` has every rank's story."""

    def __init__(self, outcomes: list[RankOutcome]):
        self.outcomes = outcomes
        detail = "\n".join(o.describe() for o in outcomes)
        first = next((o.traceback for o in outcomes if o.traceback), "")
        super().__init__(f"{sum(not o.ok for o in outcomes)} of {len(outcomes)} ranks failed:\n{detail}"
                         + (f"\n--- first traceback ---\n{first}" if first else ""))


def _rank_main(rank: int, world_size: int, fn: Callable, args: tuple, store: str, result: str,
               collective_timeout_s: float, threads: int) -> None:
    """Body of a spawned rank: join the gloo group, run ``fn(*args)``, write the outcome to ``result``."""
    start = time.perf_counter()
    torch.set_num_threads(threads)
    outcome: dict = {"ok": False}
    try:
        dist.init_process_group("gloo", store=dist.FileStore(store, world_size), rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=collective_timeout_s))
        outcome = {"ok": True, "value": fn(*args)}
    except BaseException as error:  # noqa: BLE001 — reported to the parent, which raises
        outcome = {"ok": False, "error": f"raised {type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    finally:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 — a dead peer can make teardown fail; the outcome is what matters
                pass
    outcome["seconds"] = time.perf_counter() - start
    tmp = result + ".tmp"
    torch.save(outcome, tmp)
    os.replace(tmp, result)


def start_ranks(fn: Callable, world_size: int = 2, args: tuple = (), timeout_s: float = 60.0,
                collective_timeout_s: float = 20.0, threads: int = 1) -> list[RankOutcome]:
    """Run ``fn(*args)`` on ``world_size`` spawned processes joined in a gloo group; every rank's ``RankOutcome``.

    ``fn`` reads its rank with ``torch.distributed.get_rank()``. Returns when every rank has ended or at the
    ``timeout_s`` deadline, when the ranks still running are killed (``timed_out``). Never raises for a rank's
    failure: ``run_ranks`` does. ``collective_timeout_s`` is the process group's timeout; ``threads`` torch's
    intra-op threads per rank (1: two ranks on a 2-core laptop do not fight over cores).
    """
    ctx = torch.multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="memlab-ranks-") as tmp:
        store = str(Path(tmp) / "store")
        results = [str(Path(tmp) / f"rank{r}.pt") for r in range(world_size)]
        procs = [ctx.Process(target=_rank_main, daemon=True,
                             args=(r, world_size, fn, args, store, results[r], collective_timeout_s, threads))
                 for r in range(world_size)]
        start = time.perf_counter()
        for p in procs:
            p.start()
        deadline = start + timeout_s
        for p in procs:
            p.join(max(0.0, deadline - time.perf_counter()))
        outcomes = []
        for rank, (p, path) in enumerate(zip(procs, results)):
            timed_out = p.is_alive()
            if timed_out:
                p.kill()
                p.join(5)
            if os.path.exists(path):
                data = torch.load(path, weights_only=False)
                outcomes.append(RankOutcome(rank, data["ok"], data.get("value"), data.get("error"),
                                            data.get("traceback"), p.exitcode, data["seconds"], timed_out))
            elif timed_out:
                outcomes.append(RankOutcome(rank, False, error=f"did not finish within {timeout_s:.0f} s and was "
                                            "killed (a rank waiting for another that hangs ends here)",
                                            exitcode=p.exitcode, seconds=time.perf_counter() - start,
                                            timed_out=True))
            else:
                how = (f"was killed by signal {-p.exitcode}" if p.exitcode is not None and p.exitcode < 0
                       else f"exited with code {p.exitcode} without reporting")
                outcomes.append(RankOutcome(rank, False, error=f"{how}", exitcode=p.exitcode,
                                            seconds=time.perf_counter() - start))
    return outcomes


def run_ranks(fn: Callable, world_size: int = 2, args: tuple = (), timeout_s: float = 60.0,
              collective_timeout_s: float = 20.0, threads: int = 1) -> list:
    """``start_ranks`` and return each rank's value, in rank order; raise ``RanksFailed`` (every rank's outcome and
    the first traceback) if any rank raised, died or ran out of time."""
    outcomes = start_ranks(fn, world_size, args, timeout_s, collective_timeout_s, threads)
    if not all(o.ok for o in outcomes):
        raise RanksFailed(outcomes)
    return [o.value for o in outcomes]
