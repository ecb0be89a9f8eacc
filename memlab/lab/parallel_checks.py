"""What every rank runs when memlab checks, shows and times memory parallelism (``memlab.lab.distributed.run_ranks``).

Functions here run inside spawned ranks (a gloo group is already joined) and return plain data to the parent:
tests/test_values_parallel.py, notebook 10 and kernels/bench_parallel.py call them. They are module-level so that
spawned processes can import them by name.

Equality checks build the same random table, tokens and upstream gradients on every rank from one seed, compute the
one-process answer for all tokens (fp32, ``memlab.embedding_bag`` or the unsharded layer), then the sharded answer for
this rank's tokens, and return the largest differences.
"""
from __future__ import annotations

import copy
import os
import signal
import statistics
import time

import torch
import torch.distributed as dist

from ..layers.hash_memory import HashMemory
from ..layers.memory_plus import MemoryPlus
from ..layers.peer import PEER
from ..layers.product_key_memory import ProductKeyMemory
from ..layers.sharded_values import ShardedValues, shard_values_
from ..reading.bag import embedding_bag
from ..reading.sharded_bag import column_range, exchange_counter, sharded_embedding_bag
from .row_sparse import RowSparseAdam


def _mine(counts: list[int]) -> slice:
    rank = dist.get_rank()
    start = sum(counts[:rank])
    return slice(start, start + counts[rank])


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


# ------------------------------------------------------------------------------------------------ the exchange
def exchange_equality(cases: list[dict]) -> list[dict]:
    """For each case {seed, rows, dim, bag, counts (tokens per rank), duplicates, sparse}: the sharded read's output,
    weight gradient and slice gradient against ``embedding_bag`` over the whole table (fp32), max |difference|; with
    ``sparse`` also one ``RowSparseAdam`` step on the slice against the same step on the whole table."""
    results = []
    for case in cases:
        g = torch.Generator().manual_seed(case["seed"])
        rows, dim, bag, counts = case["rows"], case["dim"], case["bag"], case["counts"]
        n = sum(counts)
        full = torch.randn(rows, dim, generator=g)
        idx = torch.randint(0, rows, (n, bag), generator=g)
        if case.get("duplicates"):
            idx[:, -1] = idx[:, 0]            # a row twice in one bag
            idx[::2, bag // 2] = 0            # a hot row read by every other token, on every rank
            idx[-1] = idx[0]                  # the first and last token (different ranks) read the same rows
        w = torch.randn(n, bag, generator=g)
        gout = torch.randn(n, dim, generator=g)
        sparse = bool(case.get("sparse"))

        table, weights = full.clone().requires_grad_(), w.clone().requires_grad_()
        ref = embedding_bag(table, idx, weights, backend="torch", sparse=sparse)
        ref.backward(gout)

        mine = _mine(counts)
        values = ShardedValues.from_full(full)
        values.sparse_grad = sparse
        my_w = w[mine].clone().requires_grad_()
        out = values.read(idx[mine], my_w, backend="torch")
        out.backward(gout[mine])
        start, stop = values.columns
        ref_table_grad = table.grad.to_dense() if sparse else table.grad
        slice_grad = values.weight.grad.to_dense() if sparse else values.weight.grad
        result = {**case, "tokens_here": counts[dist.get_rank()],
                  "out": _max_diff(out, ref[mine]), "weights_grad": _max_diff(my_w.grad, weights.grad[mine]),
                  "slice_grad": _max_diff(slice_grad, ref_table_grad[:, start:stop]),
                  "scale": float(ref.detach().abs().max())}
        if sparse:
            whole = torch.nn.Parameter(full.clone())
            whole.grad = table.grad
            RowSparseAdam([whole], lr=1e-2, weight_decay=0.1).step()
            RowSparseAdam([values.weight], lr=1e-2, weight_decay=0.1).step()
            result["adam_step"] = _max_diff(values.weight, whole[:, start:stop])
        results.append(result)
    return results


def layer_equality(kinds: tuple[str, ...] = ("pkm", "memoryplus", "peer"), d_model: int = 21,
                   counts: tuple[int, ...] = (5, 2), seed: int = 0) -> dict:
    """Each kind of product-key layer, unsharded (all tokens, one process) against ``shard_values_`` of a copy (this
    rank's tokens): max |difference| of the output, the input gradient, the dense parameters' gradients (summed over
    ranks) and the value columns' gradients. ``d_model=21``: 21 value columns split 11 + 10."""
    results = {}
    for kind in kinds:
        torch.manual_seed(seed)
        kw = dict(n_keys=8, heads=2, topk=3)
        layer = {"pkm": lambda: ProductKeyMemory(d_model, query_norm="layer", **kw),
                 "memoryplus": lambda: MemoryPlus(d_model, **kw),
                 "peer": lambda: PEER(d_model, **kw)}[kind]()
        g = torch.Generator().manual_seed(seed + 1)
        n = sum(counts)
        x, gy = torch.randn(1, n, d_model, generator=g), torch.randn(1, n, d_model, generator=g)

        ref = copy.deepcopy(layer)
        x_ref = x.clone().requires_grad_()
        y_ref = ref(x_ref)
        (y_ref * gy).sum().backward()

        sharded = copy.deepcopy(layer)
        tables = shard_values_(sharded)
        mine = _mine(list(counts))
        x_mine = x[:, mine].clone().requires_grad_()
        y = sharded(x_mine)
        (y * gy[:, mine]).sum().backward()

        dense = {name: p.grad.clone() for name, p in sharded.named_parameters()
                 if not any(p is t.weight for t in tables)}
        for grad in dense.values():
            dist.all_reduce(grad)  # each rank's gradient covers its tokens; the sum covers all of them
        ref_params = dict(ref.named_parameters())
        value_diffs = []
        for name, p in sharded.named_parameters():
            if any(p is t.weight for t in tables):
                start, stop = column_range(ref_params[name].shape[1], dist.get_world_size(), dist.get_rank())
                value_diffs.append(_max_diff(p.grad, ref_params[name].grad[:, start:stop]))
        results[kind] = {
            "tables": len(tables), "out": _max_diff(y, y_ref[:, mine]), "x_grad": _max_diff(x_mine.grad, x_ref.grad[:, mine]),
            "dense_grads": max(_max_diff(grad, ref_params[name].grad) for name, grad in dense.items()),
            "value_grads": max(value_diffs), "scale": float(y_ref.detach().abs().max()),
        }
    return results


def hash_table_exchange(tau: int = 4, d_in: int = 32, d_out: int = 20, counts: tuple[int, ...] = (3, 6),
                        seed: int = 0) -> dict:
    """The same exchange over a MemoryFormer table: ``sharded_embedding_bag`` of a HashMemory's columns and its own
    addresses against ``layer.read(*layer.address(x))`` — output, input gradient (through p(z)), table gradient."""
    torch.manual_seed(seed)
    layer = HashMemory(d_in, d_out, tau=tau)
    g = torch.Generator().manual_seed(seed + 1)
    n = sum(counts)
    x, gy = torch.randn(n, d_in, generator=g), torch.randn(n, d_out, generator=g)
    x_ref = x.clone().requires_grad_()
    y_ref = layer.read(*layer.address(x_ref))
    (y_ref * gy).sum().backward()
    start, stop = column_range(d_out, dist.get_world_size(), dist.get_rank())
    table_slice = layer.tables.detach()[:, start:stop].clone().requires_grad_()
    mine = _mine(list(counts))
    x_mine = x[mine].clone().requires_grad_()
    y = sharded_embedding_bag(table_slice, *layer.address(x_mine), d_out, backend="torch")
    (y * gy[mine]).sum().backward()
    return {"out": _max_diff(y, y_ref[mine]), "x_grad": _max_diff(x_mine.grad, x_ref.grad[mine]),
            "table_grad": _max_diff(table_slice.grad, layer.tables.grad[:, start:stop])}


def show_exchange() -> dict:
    """Notebook 10's picture, run: 6 values of 4 numbers on 2 ranks (2 columns each); rank 0 owns 2 tokens, rank 1
    owns 1; bags of 2 rows; token 0 (rank 0) and token 2 (rank 1) both read row 5. Every rank reports what it holds,
    sends and receives, and its output rows; the parent compares them with the one-process read."""
    rank, world = dist.get_rank(), dist.get_world_size()
    table = torch.arange(24, dtype=torch.float32).view(6, 4)            # row r = [4r, 4r+1, 4r+2, 4r+3]
    indices = torch.tensor([[5, 1], [2, 2], [5, 0]])                     # token 0, 1 on rank 0; token 2 on rank 1
    weights = torch.tensor([[1.0, 0.5], [0.25, 0.25], [2.0, 1.0]])
    counts = [2, 1]
    mine = _mine(counts)
    values = ShardedValues.from_full(table)
    log = [f"rank {rank}: holds columns {values.columns} of the 6 x 4 table: {values.weight.tolist()}",
           f"rank {rank}: owns tokens {list(range(mine.start, mine.stop))}: indices {indices[mine].tolist()}, "
           f"weights {weights[mine].tolist()}"]
    exchange_counter.reset()
    my_w = weights[mine].clone().requires_grad_()
    out = values.read(indices[mine], my_w, backend="torch")
    log.append(f"rank {rank}: sends per step (bytes to the other rank) "
               + ", ".join(f"{k} {v}" for k, v in exchange_counter.bytes_sent.items()))
    log.append(f"rank {rank}: receives its tokens' full rows {out.tolist()}")
    out.sum().backward()
    log.append(f"rank {rank}: slice gradient (every token's contribution to its columns) {values.weight.grad.tolist()}")
    return {"rank": rank, "world": world, "log": log, "out": out.detach(), "weights_grad": my_w.grad,
            "slice_grad": values.weight.grad, "bytes": exchange_counter.snapshot()["bytes_sent"]}


def measure_exchange(heads: int, topk: int, dim: int, tokens_per_rank: int, rows: int = 4096,
                     seed: int = 0) -> dict:
    """Bytes this rank's exchange sends in one forward and one backward read of bags of heads·topk rows (fp32),
    per step name, for ``tokens_per_rank`` tokens on every rank (``exchange_counter``)."""
    g = torch.Generator().manual_seed(seed + dist.get_rank())
    values = ShardedValues(rows, dim)
    idx = torch.randint(0, rows, (tokens_per_rank, heads, topk), generator=g)
    w = torch.softmax(torch.randn(tokens_per_rank, heads, topk, generator=g), -1).flatten(-2).requires_grad_()
    exchange_counter.reset()
    out = values.read(idx.flatten(-2), w, backend="torch")
    forward = dict(exchange_counter.bytes_sent)
    exchange_counter.reset()
    out.sum().backward()
    return {"forward": forward, "backward": dict(exchange_counter.bytes_sent), "tokens": tokens_per_rank}


def row_versus_columns(heads: int = 4, topk: int = 8, dim: int = 64, tokens_per_rank: int = 32, rows: int = 1024,
                       seed: int = 0) -> dict:
    """Notebook 10, exercise 1: the same read with the table sharded by columns (``ShardedValues``) and by rows
    (``memlab.lab.row_sharding``), against the one-process read: max |difference| of outputs and weight gradients, and
    the bytes this rank sent per token, forward and backward (fp32 values and weights, int32 indices)."""
    from .row_sharding import row_sharded_embedding_bag  # noqa: PLC0415 — the exercise's answer, imported on use

    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(seed)
    full = torch.randn(rows, dim, generator=g)
    n = tokens_per_rank * world
    idx = torch.randint(0, rows, (n, heads * topk), generator=g)
    w = torch.softmax(torch.randn(n, heads * topk, generator=g), -1)
    gout = torch.randn(n, dim, generator=g)
    ref_w = w.clone().requires_grad_()
    ref = embedding_bag(full, idx, ref_w, backend="torch")
    ref.backward(gout)
    mine = _mine([tokens_per_rank] * world)
    result = {}
    for design in ("columns", "rows"):
        my_w = w[mine].clone().requires_grad_()
        exchange_counter.reset()
        if design == "columns":
            out = ShardedValues.from_full(full).read(idx[mine], my_w, backend="torch")
        else:
            start, stop = column_range(rows, world, rank)
            out = row_sharded_embedding_bag(full[start:stop].clone(), idx[mine], my_w, rows)
        forward = exchange_counter.total_bytes(exclude=("token counts",))
        exchange_counter.reset()
        out.backward(gout[mine])
        backward = exchange_counter.total_bytes(exclude=("token counts",))
        result[design] = {"out": _max_diff(out, ref[mine]), "weights_grad": _max_diff(my_w.grad, ref_w.grad[mine]),
                          "forward_bytes_per_token": forward / tokens_per_rank,
                          "backward_bytes_per_token": backward / tokens_per_rank}
    return result


def check_suite(cases: list[dict], measure: dict, hang: bool = True) -> dict:
    """Every equality and volume check of tests/test_values_parallel.py in one session (starting processes is the
    slow part): ``exchange_equality(cases)``, ``layer_equality()``, ``hash_table_exchange()``,
    ``row_versus_columns()``, ``measure_exchange(**measure)`` and, last, ``hang_one_rank()`` (``hang=False``: not)."""
    results = {"exchange": exchange_equality(cases), "layers": layer_equality(), "hash": hash_table_exchange(),
               "row_vs_columns": row_versus_columns(), "measure": measure_exchange(**measure)}
    if hang:
        dist.barrier()
        results["hang"] = hang_one_rank()  # last: it leaves a broken group behind
    return results


# ------------------------------------------------------------------------------------------------ training
def train_jobs(jobs: list[dict]) -> list[dict]:
    """Run ``memlab.lab.train.train`` jobs in order on every rank: each {model, train, resume, only_rank0}. A job
    with ``only_rank0`` trains on rank 0 alone (values_parallel=1) while the others wait: the middle of a
    2 → 1 → 2 re-sharding. Returns, per job, rank 0's (history losses, val losses, stopped_at)."""
    from .train import train  # noqa: PLC0415 — the trainer imports this package's layers; keep imports light

    out = []
    for job in jobs:
        result = None
        if not job.get("only_rank0") or dist.get_rank() == 0:
            result = train(job["model"], job["train"], resume=job.get("resume", False), verbose=False)
        dist.barrier()
        if dist.get_rank() == 0:
            out.append({"name": job["train"]["name"], "losses": [h["loss"] for h in result["history"]],
                        "val_losses": [e["val_loss"] for e in result.get("evals", [])],
                        "stopped_at": result.get("stopped_at"), "val_ppl": result.get("val_ppl")})
    return out


def train_then_die(model: dict, train_config: dict, die_rank: int = 1, die_step: int = 2) -> dict:
    """Train on every rank; rank ``die_rank`` kills itself (SIGKILL: no clean-up, no goodbye) after step
    ``die_step``. The others must fail with a clear error, not hang: they return {"error": message,
    "noticed_after_s": seconds from the death to the error} for the parent to check."""
    from .train import train  # noqa: PLC0415

    died = {}

    def on_step(record):
        if record["step"] == die_step:
            if dist.get_rank() == die_rank:
                os.kill(os.getpid(), signal.SIGKILL)
            died["at"] = time.perf_counter()

    try:
        train(model, train_config, verbose=False, on_step=on_step)
    except Exception as error:  # noqa: BLE001 — the error is the result
        return {"error": f"{type(error).__name__}: {error}",
                "noticed_after_s": time.perf_counter() - died["at"] if "at" in died else float("nan")}
    return {"error": None}


def train_jobs_then_die(jobs: list[dict], model: dict, train_config: dict) -> dict:
    """``train_jobs(jobs)``, then ``train_then_die(model, train_config)`` in the same processes (one start-up less):
    rank 0 returns {"jobs": ..., "death": ...}; rank 1 does not return."""
    done = train_jobs(jobs)
    return {"jobs": done, "death": train_then_die(model, train_config)}


def hang_one_rank(hang_rank: int = 1, timeout_s: float = 2.0) -> dict:
    """Rank ``hang_rank`` stops answering for a while (sleeps for ``timeout_s`` + 1.5 s) instead of dying; the others
    read through a ``ShardedValues`` on a fresh gloo group whose timeout is ``timeout_s``, and must fail at that
    timeout rather than wait. Returns {"error", "waited_s"} on the others, {"slept_s"} on the sleeper."""
    import datetime  # noqa: PLC0415

    group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))
    values = ShardedValues(8, 4, group=group)
    if dist.get_rank() == hang_rank:
        time.sleep(timeout_s + 1.5)
        return {"slept_s": timeout_s + 1.5}
    start = time.perf_counter()
    try:
        values.read(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3))
    except Exception as error:  # noqa: BLE001 — the error is the result
        return {"error": f"{type(error).__name__}: {error}", "waited_s": time.perf_counter() - start}
    return {"error": None, "waited_s": time.perf_counter() - start}


# ------------------------------------------------------------------------------------------------ timing
def step_timing(d_model: int, n_keys: int, heads: int, topk: int, tokens: int, steps: int, warmup: int = 2,
                seed: int = 0) -> dict:
    """Median seconds of one training step (forward, backward, AdamW step) of a ``MemoryPlus`` layer on ``tokens``
    tokens in all, split over the ranks, with its values sharded over them (a 1-rank group: the plain layer): wall
    time, this process's CPU time (all its threads; what the step costs when cores are shared with other work), the
    time inside the exchange's collectives and its bytes, per step."""
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(seed)
    layer = MemoryPlus(d_model, n_keys=n_keys, heads=heads, topk=topk, max_memory_bytes=None)
    sharded = {id(t.weight) for t in shard_values_(layer)} if world > 1 else set()
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    sizes = [len(p) for p in torch.tensor_split(torch.arange(tokens), world)]
    g = torch.Generator().manual_seed(seed + 1 + rank)
    x = torch.randn(sizes[rank], d_model, generator=g)
    times, cpu_times, exchange_s, exchange_bytes, collective_calls = [], [], [], [], []
    for i in range(warmup + steps):
        exchange_counter.reset()
        dist.barrier()
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = layer(x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1:
            grads = [p.grad for p in layer.parameters() if id(p) not in sharded]
            flat = torch.cat([gr.reshape(-1) for gr in grads])
            dist.all_reduce(flat)  # the data-parallel part: replicated weights' gradients
        opt.step()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        if i >= warmup:
            times.append(elapsed)
            cpu_times.append(cpu)
            exchange_s.append(exchange_counter.total_seconds())
            exchange_bytes.append(exchange_counter.total_bytes(exclude=("token counts",)))
            collective_calls.append(sum(exchange_counter.calls.values()))
    return {"rank": rank, "world": world, "tokens_here": sizes[rank], "step_s": statistics.median(times),
            "cpu_s": statistics.median(cpu_times),
            "exchange_s": statistics.median(exchange_s), "exchange_bytes": statistics.median(exchange_bytes),
            "collectives_per_step": collective_calls[-1] if collective_calls else 0,
            "threads": torch.get_num_threads()}
