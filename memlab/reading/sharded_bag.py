"""Memory parallelism: the weighted EmbeddingBag over a value table whose columns are spread over processes.

Memory Layers at Scale (arXiv 2412.09764, §3, "parallel memory"; notebooks/paper_notes.md §2.3) shards the value table
along the embedding dimension over a group of P processes. Rank p holds every row but only its columns,
``V[:, cols_p]`` (``column_split``: d columns in P nearly equal blocks). One read of bags of B rows goes:

    1. each rank addresses its own N_p tokens          indices, weights (N_p, B)
    2. all-gather                                      every rank gets the indices and weights of all N = Σ N_p tokens
    3. local read                                      rank p: Σ_j w · V[idx, cols_p] for all N tokens      (N, d_p)
    4. all-to-all                                      rank p sends rank q the rows of q's tokens; q puts the P column
                                                       blocks side by side                                  (N_q, d)

The backward runs the adjoints in reverse order:

    4ᵀ all-to-all    the output gradient (N_q, d) goes back column block by column block            → (N, d_p) on p
    3ᵀ local         rank p's slice gradient needs nothing from other ranks (dense, or row-sparse exactly as
                     ``embedding_bag(sparse=True)`` gives it)
    2ᵀ reduce        ∂L/∂w[n, j] = Σ_p ⟨V[idx, cols_p], g[n, cols_p]⟩: every rank holds a partial sum for all N
                     tokens; the partials go to the token's owner and are summed there (a reduce-scatter, written
                     as all-to-all + a local sum because gloo's reduce_scatter needs equal blocks)

Every exchange is a ``torch.distributed`` collective: ``all_gather`` (padded to the largest token count, because gloo's
all_gather needs equal sizes) and ``all_to_all_single`` with uneven splits. Tokens are ordered by owner (rank 0's
first), so each owner's rows are one contiguous block. Indices travel as int32 when the table has fewer than 2^31
rows. Each collective is timed and its bytes counted in ``exchange_counter`` (the bench and notebook 10 compare them
with ``memlab.lab.comm_model``). A collective that fails — another rank died, or did not answer within the process
group's timeout — raises ``ExchangeError`` naming the step, instead of hanging.

``sharded_row_dots`` is the other direction, for PEER's down-rows: ⟨V[idx], x⟩ with x's columns sent to the slice
owners and the partial dot products summed back at the token owners.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .bag import check_bag_shapes, embedding_bag


def column_split(dim: int, parts: int) -> tuple[int, ...]:
    """Column counts of ``parts`` nearly equal blocks of ``dim`` columns (the first ``dim % parts`` get one more),
    as ``torch.tensor_split`` cuts them. ``column_split(7, 2) == (4, 3)``."""
    if parts < 1 or dim < parts:
        raise ValueError(f"cannot split {dim} value columns over {parts} ranks: every rank needs at least one column; "
                         f"use at most {dim} ranks or a wider value table")
    base, extra = divmod(dim, parts)
    return tuple(base + (1 if p < extra else 0) for p in range(parts))


def column_range(dim: int, parts: int, rank: int) -> tuple[int, int]:
    """[start, stop) of rank ``rank``'s columns in ``column_split(dim, parts)``."""
    sizes = column_split(dim, parts)
    start = sum(sizes[:rank])
    return start, start + sizes[rank]


# ------------------------------------------------------------------------------------------------ accounting
@dataclass
class ExchangeCounter:
    """Bytes this process sent to other ranks, calls and seconds, per exchange step (``exchange_counter``).

    Bytes are the tensor bytes handed to each collective that leave this rank: for an all-gather its (padded) block
    once per other rank, for an all-to-all the blocks addressed to other ranks. Not counted: what a collective's
    algorithm relays for others, and transport headers. Seconds are wall time inside the collective, waiting for the
    slowest rank included.
    """

    bytes_sent: dict = field(default_factory=lambda: defaultdict(int))
    calls: dict = field(default_factory=lambda: defaultdict(int))
    seconds: dict = field(default_factory=lambda: defaultdict(float))

    def reset(self) -> None:
        self.bytes_sent.clear()
        self.calls.clear()
        self.seconds.clear()

    def record(self, step: str, nbytes: int, seconds: float) -> None:
        self.bytes_sent[step] += int(nbytes)
        self.calls[step] += 1
        self.seconds[step] += seconds

    def total_bytes(self, exclude: tuple[str, ...] = ()) -> int:
        return sum(b for step, b in self.bytes_sent.items() if step not in exclude)

    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    def snapshot(self) -> dict:
        """Plain dicts (picklable): {"bytes_sent": {step: bytes}, "calls": {...}, "seconds": {...}}."""
        return {"bytes_sent": dict(self.bytes_sent), "calls": dict(self.calls), "seconds": dict(self.seconds)}


#: This process's counter; reset it before the calls you want to measure.
exchange_counter = ExchangeCounter()


class ExchangeError(RuntimeError):
    """A collective of the memory-parallel exchange failed: another rank stopped, crashed or timed out."""


def _collective(step: str, group, nbytes: int, call) -> None:
    start = time.perf_counter()
    try:
        call()
    except RuntimeError as error:
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        raise ExchangeError(
            f"memory-parallel exchange failed on rank {rank} of {world} during '{step}': another rank stopped, "
            f"crashed or did not answer within the process group's timeout. Every rank must run the same forward and "
            f"backward; look at the other ranks' output for the first error. ({type(error).__name__}: "
            f"{str(error).strip()[:300]})"
        ) from error
    exchange_counter.record(step, nbytes, time.perf_counter() - start)


def _world(group) -> tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "memory parallelism needs torch.distributed initialised: launch with torchrun (the trainer then calls "
            "init_process_group), or start ranks with memlab.lab.distributed.run_ranks; on one process use "
            "memlab.SharedValues"
        )
    return dist.get_rank(group), dist.get_world_size(group)


# ------------------------------------------------------------------------------------------------ the raw exchanges
def gather_counts(n: int, group=None, device=None) -> list[int]:
    """Every rank's token count (one tiny all-gather), in rank order."""
    rank, world = _world(group)
    mine = torch.tensor([n], dtype=torch.long, device=device)
    out = [torch.empty_like(mine) for _ in range(world)]
    _collective("token counts", group, (world - 1) * mine.element_size(), lambda: dist.all_gather(out, mine, group))
    return [int(c) for c in torch.cat(out).tolist()]


def all_gather_rows(x: torch.Tensor, counts: list[int], group=None, step: str = "all-gather") -> torch.Tensor:
    """(counts[rank], ...) on each rank → (Σ counts, ...) everywhere, rank 0's rows first.

    gloo's all_gather needs equal sizes, so every block is padded to max(counts) rows (the padding is counted)."""
    rank, world = _world(group)
    most = max(counts)
    if x.shape[0] != counts[rank]:
        raise ValueError(f"rank {rank} holds {x.shape[0]} rows but announced {counts[rank]}")
    if most == 0:
        return x.new_empty((0, *x.shape[1:]))
    padded = x.contiguous()
    if x.shape[0] < most:
        padded = torch.cat([padded, padded.new_zeros((most - x.shape[0], *x.shape[1:]))])
    blocks = [torch.empty_like(padded) for _ in range(world)]
    _collective(step, group, (world - 1) * padded.numel() * padded.element_size(),
                lambda: dist.all_gather(blocks, padded, group))
    return torch.cat([block[:c] for block, c in zip(blocks, counts)])


def reduce_to_owners(parts: torch.Tensor, counts: list[int], group=None, step: str = "reduce") -> torch.Tensor:
    """(Σ counts, ...) partial sums on each rank → (counts[rank], ...): the sum over ranks of the owner's rows.

    A reduce-scatter with uneven blocks: an ``all_to_all_single`` (row block q goes to rank q) and a local sum in rank
    order (deterministic). The adjoint of ``all_gather_rows``."""
    rank, world = _world(group)
    mine, rest = counts[rank], parts.shape[1:]
    send = parts.contiguous()
    recv = send.new_empty((world * mine, *rest))
    nbytes = (sum(counts) - counts[rank]) * math.prod(rest) * send.element_size()
    _collective(step, group, nbytes, lambda: dist.all_to_all_single(recv, send, [mine] * world, list(counts), group))
    return recv.view(world, mine, *rest).sum(0)


def columns_to_owners(partial: torch.Tensor, counts: list[int], sizes: tuple[int, ...], group=None,
                      step: str = "outputs") -> torch.Tensor:
    """(Σ counts, d_rank) column block of every token → (counts[rank], d) full rows of this rank's tokens.

    Rank p sends rank q the rows of q's tokens (N_q × d_p numbers); q sets the P blocks side by side. One
    ``all_to_all_single`` of flattened blocks (blocks differ in width when d is not divisible by P)."""
    rank, world = _world(group)
    mine, width = counts[rank], partial.shape[1]
    send = partial.contiguous().view(-1)
    in_splits = [c * width for c in counts]
    out_splits = [mine * s for s in sizes]
    recv = send.new_empty(sum(out_splits))
    nbytes = (sum(in_splits) - in_splits[rank]) * send.element_size()
    _collective(step, group, nbytes, lambda: dist.all_to_all_single(recv, send, out_splits, in_splits, group))
    return torch.cat([b.view(mine, s) for b, s in zip(recv.split(out_splits), sizes)], dim=1)


def columns_from_owners(full: torch.Tensor, counts: list[int], sizes: tuple[int, ...], group=None,
                        step: str = "columns") -> torch.Tensor:
    """(counts[rank], d) rows of this rank's tokens → (Σ counts, d_rank): this rank's columns of every token.
    The adjoint of ``columns_to_owners``."""
    rank, world = _world(group)
    mine, width = counts[rank], sizes[rank]
    send = torch.cat([block.reshape(-1) for block in full.split(list(sizes), dim=1)])
    in_splits = [mine * s for s in sizes]
    out_splits = [c * width for c in counts]
    recv = send.new_empty(sum(out_splits))
    nbytes = (sum(in_splits) - in_splits[rank]) * send.element_size()
    _collective(step, group, nbytes, lambda: dist.all_to_all_single(recv, send, out_splits, in_splits, group))
    return torch.cat([b.view(c, width) for b, c in zip(recv.split(out_splits), counts)])


# ------------------------------------------------------------------------------------------------ autograd pairs
class _AllGatherRows(torch.autograd.Function):
    """Forward ``all_gather_rows``; backward ``reduce_to_owners`` (each token's gradient summed at its owner)."""

    @staticmethod
    def forward(ctx, x, counts, group, step):
        ctx.counts, ctx.group, ctx.step = counts, group, step
        return all_gather_rows(x, counts, group, step)

    @staticmethod
    def backward(ctx, grad):
        return reduce_to_owners(grad, ctx.counts, ctx.group, ctx.step + " grad"), None, None, None


class _ReduceToOwners(torch.autograd.Function):
    """Forward ``reduce_to_owners``; backward ``all_gather_rows``."""

    @staticmethod
    def forward(ctx, parts, counts, group, step):
        ctx.counts, ctx.group, ctx.step = counts, group, step
        return reduce_to_owners(parts, counts, group, step)

    @staticmethod
    def backward(ctx, grad):
        return all_gather_rows(grad, ctx.counts, ctx.group, ctx.step + " grad"), None, None, None


class _ColumnsToOwners(torch.autograd.Function):
    """Forward ``columns_to_owners``; backward ``columns_from_owners``."""

    @staticmethod
    def forward(ctx, partial, counts, sizes, group, step):
        ctx.counts, ctx.sizes, ctx.group, ctx.step = counts, sizes, group, step
        return columns_to_owners(partial, counts, sizes, group, step)

    @staticmethod
    def backward(ctx, grad):
        return columns_from_owners(grad, ctx.counts, ctx.sizes, ctx.group, ctx.step + " grad"), None, None, None, None


class _ColumnsFromOwners(torch.autograd.Function):
    """Forward ``columns_from_owners``; backward ``columns_to_owners``."""

    @staticmethod
    def forward(ctx, full, counts, sizes, group, step):
        ctx.counts, ctx.sizes, ctx.group, ctx.step = counts, sizes, group, step
        return columns_from_owners(full, counts, sizes, group, step)

    @staticmethod
    def backward(ctx, grad):
        return columns_to_owners(grad, ctx.counts, ctx.sizes, ctx.group, ctx.step + " grad"), None, None, None, None


# ------------------------------------------------------------------------------------------------ the reads
def _gather_indices(indices2d: torch.Tensor, rows: int, counts: list[int], group) -> torch.Tensor:
    small = indices2d.to(torch.int32) if rows < 2**31 else indices2d.long()  # int32 on the wire: half the bytes
    return all_gather_rows(small, counts, group, "indices").long()


def _check_slice(table_slice: torch.Tensor, dim: int, group) -> tuple[int, int, tuple[int, ...]]:
    rank, world = _world(group)
    sizes = column_split(dim, world)
    if table_slice.dim() != 2 or table_slice.shape[1] != sizes[rank]:
        raise ValueError(
            f"rank {rank} of {world} must hold columns {column_range(dim, world, rank)} of the dim={dim} table "
            f"({sizes[rank]} columns), got a slice of shape {tuple(table_slice.shape)}"
        )
    return rank, world, sizes


def sharded_embedding_bag(
    table_slice: torch.Tensor,
    indices: torch.Tensor,
    weights: torch.Tensor,
    dim: int,
    group=None,
    *,
    backend: str = "auto",
    sparse: bool = False,
) -> torch.Tensor:
    """``embedding_bag`` over a (rows, dim) table whose columns are spread over the ranks of ``group``.

    Args:
        table_slice: this rank's columns ``column_range(dim, P, rank)`` of the table, (rows, d_rank). Differentiable.
        indices, weights: (..., B) bags of this rank's own tokens (any number per rank, 0 included). ``weights`` is
            differentiable; its gradient comes back to this rank's tokens only.
        dim: the full table width d.
        group: the process group the columns are spread over (None: the default group).
        backend, sparse: passed to the local ``memlab.embedding_bag`` (``sparse=True``: a row-sparse slice gradient).

    Returns (..., dim) on every rank — the same numbers as ``embedding_bag(full_table, indices, weights)`` up to fp32
    rounding. Collective: every rank of ``group`` must call it, in the same order as its other exchanges.
    """
    _, world, sizes = _check_slice(table_slice, dim, group)
    check_bag_shapes(table_slice, indices, weights)
    lead, bag = indices.shape[:-1], indices.shape[-1]
    indices2d, weights2d = indices.reshape(-1, bag), weights.reshape(-1, bag).to(table_slice.dtype)
    counts = gather_counts(indices2d.shape[0], group, indices.device)
    all_indices = _gather_indices(indices2d, table_slice.shape[0], counts, group)
    all_weights = _AllGatherRows.apply(weights2d, counts, group, "weights")
    partial = embedding_bag(table_slice, all_indices, all_weights, backend=backend, check=False, sparse=sparse)
    out = _ColumnsToOwners.apply(partial, counts, sizes, group, "outputs")
    return out.reshape(*lead, dim)


def sharded_row_dots(
    table_slice: torch.Tensor,
    indices: torch.Tensor,
    x: torch.Tensor,
    dim: int,
    group=None,
    *,
    sparse: bool = False,
) -> torch.Tensor:
    """⟨V[indices[..., j]], x⟩ for every j, (..., B), over a table whose columns are spread over ``group``.

    PEER's down-rows uᵀx: x's column blocks go to their slice owners (all-to-all), each rank takes partial dot
    products over its columns for all tokens, and the partials are summed at the tokens' owners (reduce).
    Differentiable in ``table_slice`` and ``x``. Collective, like ``sharded_embedding_bag``.
    """
    _, world, sizes = _check_slice(table_slice, dim, group)
    lead, bag = indices.shape[:-1], indices.shape[-1]
    indices2d = indices.reshape(-1, bag)
    x2d = x.reshape(-1, dim).to(table_slice.dtype)
    if x2d.shape[0] != indices2d.shape[0]:
        raise ValueError(f"x holds {x2d.shape[0]} tokens but indices {indices2d.shape[0]} bags; give one bag per token")
    counts = gather_counts(indices2d.shape[0], group, indices.device)
    all_indices = _gather_indices(indices2d, table_slice.shape[0], counts, group)
    x_columns = _ColumnsFromOwners.apply(x2d, counts, sizes, group, "x columns")
    rows = F.embedding(all_indices, table_slice, sparse=sparse)                     # (N, B, d_rank)
    partial = torch.einsum("nbd,nd->nb", rows, x_columns)
    return _ReduceToOwners.apply(partial, counts, group, "dots").reshape(*lead, bag)
