"""Values sharded by ROWS instead of columns: the alternative Memory Layers at Scale did not take (notebook 10,
exercise 1 — this is the reference answer, tested in tests/test_values_parallel.py).

Rank p holds rows ``column_range(n, P, p)`` of the table (all d columns). One read:

    1. all-gather the tokens' indices and weights (as the column design does)
    2. each rank reads the bag entries whose row it holds, for every token: a full-width partial sum   (N, d)
    3. the partial sums go to the token owners and are added there (reduce)                          (N_q, d)

Step 3 is what makes it the worse design: every rank sends d numbers for every other rank's token, (P−1)·d·e bytes per
token, where the column design sends (P−1)/P·d·e — P times less. Sending only the entries a rank holds (an all-to-all
of (token, row, weight) triples) would shrink step 1 to (P−1)/P·B·(s_idx+s_w), but with B = 128 rows per token and
P = 8, every rank holds one of a token's rows with probability 1 − (7/8)^128 ≈ 1, so step 3 stays (P−1)·d·e
(``memlab.lab.comm_model.row_sharded_bytes_per_token``). And the work follows the rows: a popular row puts all of its
reads on one rank, while the column design gives every rank exactly N·B reads of d/P numbers.
"""
from __future__ import annotations

import torch

from ..reading.bag import embedding_bag
from ..reading.sharded_bag import (
    _AllGatherRows, _ReduceToOwners, _gather_indices, _world, column_range, gather_counts,
)


def row_sharded_embedding_bag(table_rows: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                              n_rows: int, group=None) -> torch.Tensor:
    """``embedding_bag`` over an (n_rows, d) table whose ROWS are spread over ``group``: ``table_rows`` holds this
    rank's rows ``column_range(n_rows, P, rank)``. ``indices``/``weights``: (..., B) bags of this rank's tokens.
    Returns (..., d), equal to the one-process read up to fp32 rounding. Collective."""
    rank, world = _world(group)
    start, stop = column_range(n_rows, world, rank)
    if table_rows.shape[0] != stop - start:
        raise ValueError(f"rank {rank} of {world} holds rows [{start}, {stop}) of {n_rows}: expected "
                         f"{stop - start} rows, got {table_rows.shape[0]}")
    lead, bag = indices.shape[:-1], indices.shape[-1]
    indices2d, weights2d = indices.reshape(-1, bag), weights.reshape(-1, bag).to(table_rows.dtype)
    counts = gather_counts(indices2d.shape[0], group, indices.device)
    all_indices = _gather_indices(indices2d, n_rows, counts, group)
    all_weights = _AllGatherRows.apply(weights2d, counts, group, "weights")
    held = (all_indices >= start) & (all_indices < stop)
    local = torch.where(held, all_indices - start, torch.zeros_like(all_indices))  # other ranks' rows: weight 0
    partial = embedding_bag(table_rows, local, all_weights * held, backend="torch", check=False)  # (N, d)
    out = _ReduceToOwners.apply(partial, counts, group, "partial sums")
    return out.reshape(*lead, table_rows.shape[1])


def reads_per_rank(indices: torch.Tensor, n_rows: int, ranks: int) -> torch.Tensor:
    """How many of the row reads in ``indices`` land on each rank when the rows are split into ``ranks`` blocks
    (``column_range``), (ranks,). With the columns split instead, every rank does all of them (on d/P numbers)."""
    bounds = torch.tensor([column_range(n_rows, ranks, r)[1] for r in range(ranks)])
    owner = torch.bucketize(indices.reshape(-1), bounds, right=True)
    return torch.bincount(owner, minlength=ranks)
