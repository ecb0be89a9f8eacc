"""Values sharded along the embedding dimension over processes: Memory Layers at Scale's memory parallelism
(arXiv 2412.09764, §3, "parallel memory"), as a drop-in for ``SharedValues``.

    rank p of P holds V[:, cols_p] (all n rows, d_p ≈ d/P columns); a read all-gathers the tokens' indices and weights,
    reads its columns for every token, and sends each token's columns back to the rank that owns the token.

The exchange itself is ``memlab.reading.sharded_bag``; this module is the parameter that holds one rank's columns and
the helper that turns a model's value tables into sharded ones (``shard_values_``).

MemoryFormer's hash tables are not sharded this way in memlab's models, on purpose: see ``WHY_NOT_HASH_TABLES``.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .._checks import DEFAULT_MAX_MEMORY_BYTES, check_memory, check_positive_int
from ..reading.sharded_bag import (
    column_range, column_split, sharded_embedding_bag, sharded_row_dots,
)
from .shared_values import SharedValues

#: memlab's answer to "shard MemoryFormer's tables the same way?" (notebook 10 works the numbers).
WHY_NOT_HASH_TABLES = (
    "The exchange works on MemoryFormer tables unchanged: a HashMemory read is the same weighted EmbeddingBag, and "
    "tests/test_values_parallel.py runs sharded_embedding_bag over a HashMemory's columns and matches layer.read. "
    "memlab's models still do not shard them, for two reasons. (1) Nothing needs it: MemoryFormer's memory is many "
    "per-layer tables, and none outgrows a device (the largest, a Memory Block's second layer at d = 1024, tau = 8, "
    "e = 2, is 128 tables x 1024 rows x 1024 = 0.5 GB in fp32). A model too big for one device is split by layers "
    "(pipeline stages), which sends d numbers per token at each stage boundary and nothing inside a layer. "
    "(2) Sharding by columns would put an exchange inside every block: one for Q, K and V (they share one hash), one "
    "for each Memory Block layer. Each exchange all-gathers K = d/tau indices and weights per token and sends the "
    "output columns back, so a block costs about 3.6x a single Memory+ read: 25.5 KB per token forward at d = 1024, "
    "P = 8 (memlab.lab.comm_model.hash_block_bytes_per_token), against 2 KB per token at a pipeline boundary. "
    "Memory+ is the opposite case: one shared pool (up to 128B parameters in the paper) that a few layers read. "
    "Layers cannot split it, and column sharding is what lets one table outgrow a device."
)


class ShardedValues(SharedValues):
    """One rank's columns of a (n_values, dim) value table; the layers read it exactly as they read ``SharedValues``.

    ``weight`` is this rank's slice, (n_values, d_rank) with columns ``columns`` = ``column_range(dim, P, rank)``
    (``column_split``: nearly equal blocks, so ``dim`` need not be divisible by P). ``dim`` and ``n_values`` describe
    the whole table, so ``ProductKeyMemory(values=...)`` checks it like a local one. ``read`` and ``row_dots`` run the
    exchange (``memlab.reading.sharded_bag``): collective calls, so every rank of ``group`` must run the same forward
    and backward. Gradients stay local: each rank's slice gets the gradient of its columns for every token of every
    rank (dense, or row-sparse with ``sparse_grad=True``, then stepped by ``memlab.RowSparseAdam`` like any table).
    A gradient norm for clipping must add up every rank's columns: ``memlab.lab.values_parallel.ValuesParallel``'s
    ``clip_grad_norm_`` does (``memlab.clip_sparse_grad_norm_`` alone sees one slice).

    Args:
        n_values, dim: the whole table's rows and columns.
        group: the process group the columns are spread over (None: the default group). torch.distributed must be
            initialised first (torchrun, or ``memlab.lab.distributed.run_ranks``).
        max_memory_bytes: refuse to build a slice larger than this (fp32 estimate, this rank's slice).
        sparse_grad: as for ``SharedValues``.
        weight: this rank's slice to hold (default: drawn N(0, 1/dim), the distribution ``SharedValues`` draws from,
            but not the same numbers — use ``from_full`` to slice an existing table).
    """

    def __init__(
        self,
        n_values: int,
        dim: int,
        group=None,
        max_memory_bytes: float | None = DEFAULT_MAX_MEMORY_BYTES,
        sparse_grad: bool = False,
        *,
        weight: torch.Tensor | None = None,
    ):
        nn.Module.__init__(self)
        if not isinstance(sparse_grad, bool):
            raise TypeError(f"sparse_grad must be True or False, got {sparse_grad!r}")
        check_positive_int(n_values, "n_values")
        check_positive_int(dim, "dim")
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "ShardedValues needs torch.distributed initialised: launch with torchrun (python -m memlab train "
                "--set values_parallel=P does the rest), or start ranks with memlab.lab.distributed.run_ranks; "
                "on one process use memlab.SharedValues"
            )
        self.sparse_grad, self.group, self.full_dim = sparse_grad, group, dim
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        self.column_sizes = column_split(dim, self.world_size)
        self.columns = column_range(dim, self.world_size, self.rank)
        width = self.column_sizes[self.rank]
        check_memory(n_values * width * 4, f"value slice ({n_values} × {width}, fp32, rank {self.rank})",
                     max_memory_bytes, "lower the number of values (n_keys) or shard over more ranks")
        if weight is None:
            weight = torch.randn(n_values, width) * dim**-0.5
        elif tuple(weight.shape) != (n_values, width):
            raise ValueError(f"rank {self.rank} of {self.world_size} holds columns {self.columns} of dim={dim}: its "
                             f"slice must be ({n_values}, {width}), got {tuple(weight.shape)}")
        self.weight = nn.Parameter(weight)

    @classmethod
    def from_full(cls, values: SharedValues | torch.Tensor, group=None) -> "ShardedValues":
        """This rank's columns of an existing table (a ``SharedValues`` — its ``sparse_grad`` is kept — or a tensor).
        Every rank passes the same table and keeps only its slice."""
        full = values.weight if isinstance(values, SharedValues) else values
        sparse = values.sparse_grad if isinstance(values, SharedValues) else False
        world = dist.get_world_size(group) if dist.is_initialized() else 1
        rank = dist.get_rank(group) if dist.is_initialized() else 0
        start, stop = column_range(full.shape[1], world, rank)
        return cls(full.shape[0], full.shape[1], group, max_memory_bytes=None, sparse_grad=sparse,
                   weight=full.detach()[:, start:stop].clone())

    @property
    def dim(self) -> int:
        """The whole table's width (this rank holds ``weight.shape[1]`` of its columns)."""
        return self.full_dim

    @property
    def local_dim(self) -> int:
        return self.weight.shape[1]

    def numel_on_other_ranks(self) -> int:
        """Numbers of the table held by the other ranks (model reports count the whole table)."""
        return self.n_values * self.full_dim - self.weight.numel()

    def read(self, indices: torch.Tensor, weights: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        """Σ_j weights[..., j] · V[indices[..., j]] for this rank's tokens, (..., dim): all-gather, local read of this
        rank's columns, all-to-all back (``memlab.reading.sharded_bag.sharded_embedding_bag``)."""
        return sharded_embedding_bag(self.weight, indices, weights, self.full_dim, self.group, backend=backend,
                                     sparse=self.sparse_grad)

    def row_dots(self, indices: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """⟨V[indices[..., j]], x⟩ for this rank's tokens, (..., B) (``sharded_row_dots``)."""
        return sharded_row_dots(self.weight, indices, x, self.full_dim, self.group, sparse=self.sparse_grad)

    def memory_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of the whole table in ``dtype`` (all ranks together, as ``SharedValues.memory_bytes``)."""
        return self.n_values * self.full_dim * torch.empty((), dtype=dtype).element_size()

    def local_memory_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of this rank's slice in ``dtype``."""
        return self.weight.numel() * torch.empty((), dtype=dtype).element_size()

    @torch.no_grad()
    def gather_full(self) -> torch.Tensor:
        """The whole (n_values, dim) table on every rank (a collective; for checks and export, not for training)."""
        widest = max(self.column_sizes)
        padded = torch.zeros(self.n_values, widest, dtype=self.weight.dtype, device=self.weight.device)
        padded[:, : self.local_dim] = self.weight
        blocks = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(blocks, padded, self.group)
        return torch.cat([b[:, :w] for b, w in zip(blocks, self.column_sizes)], dim=1)

    def extra_repr(self) -> str:
        start, stop = self.columns
        return (f"n_values={self.n_values}, dim={self.full_dim}, columns [{start}, {stop}) on rank {self.rank} of "
                f"{self.world_size}" + (", sparse_grad=True" if self.sparse_grad else ""))


def shard_values_(module: nn.Module, group=None) -> list[ShardedValues]:
    """Replace every ``SharedValues`` inside ``module`` by this rank's ``ShardedValues.from_full`` of it, in place.

    A table read by several layers (Memory+'s shared pool) stays one table: every reference to it is replaced by the
    same ``ShardedValues``. Returns the new tables (once each). Build the model identically on every rank (same seed)
    before calling it: each rank keeps its columns of the same numbers, so the sharded model computes what the
    one-process model computes. Build optimizers after it.
    """
    replaced: dict[int, ShardedValues] = {}
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SharedValues) and not isinstance(child, ShardedValues):
                if id(child) not in replaced:
                    replaced[id(child)] = ShardedValues.from_full(child, group)
                setattr(parent, name, replaced[id(child)])
    return list(replaced.values())
