"""The weighted EmbeddingBag as a first Triton kernel: one table row at a time (for notebook 04; not used by memlab).

    out[n, :] = Σ_j w[n, j] · table[idx[n, j], :]

Program (n, t) owns bag n and the output columns [t·BLOCK_D, (t+1)·BLOCK_D). It walks the bag's B entries one after
another: load one index and one weight (scalars), load that row's BLOCK_D numbers, multiply-add into an fp32
accumulator; at the end store the accumulator once. Correct, and easy to read — but each step has a single row in
flight, and the load of row j+1 cannot start before the index j+1 is read, so a GPU spends most of the time waiting
on memory latency. The production kernel (``memlab.reading.kernels.triton_bag._bag_forward_kernel``) loads a
[BLOCK_B × BLOCK_D] tile — BLOCK_B rows at once — which is the whole difference.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def one_row_per_step_kernel(
    table_ptr, idx_ptr, w_ptr, out_ptr,
    bag_size, dim,
    BLOCK_D: tl.constexpr,
):
    bag = tl.program_id(0).to(tl.int64)              # which bag (output row) this program owns
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # which columns
    mask_d = offs_d < dim                            # masked tail: dim need not be a power of two
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)      # accumulate in fp32 whatever the table dtype
    for j in range(0, bag_size):
        row = tl.load(idx_ptr + bag * bag_size + j).to(tl.int64)  # int64: row·dim can exceed 2^31
        w = tl.load(w_ptr + bag * bag_size + j).to(tl.float32)
        vals = tl.load(table_ptr + row * dim + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        acc += w * vals
    tl.store(out_ptr + bag * dim + offs_d, acc.to(out_ptr.dtype.element_ty), mask=mask_d)


def embedding_bag_one_row(table: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                          block_d: int | None = None) -> torch.Tensor:
    """Host wrapper: (rows, dim) table, (bags, B) indices and weights → (bags, dim). Forward only (no autograd).

    ``block_d``: columns per program (a power of two; default: dim rounded up, at most 1024).
    """
    table, indices, weights = table.contiguous(), indices.contiguous(), weights.contiguous()
    n_bags, bag_size = indices.shape
    dim = table.shape[1]
    out = torch.empty(n_bags, dim, dtype=table.dtype, device=table.device)
    if n_bags == 0 or dim == 0:
        return out
    block_d = block_d or min(triton.next_power_of_2(dim), 1024)
    grid = (n_bags, triton.cdiv(dim, block_d))       # one program per (bag, column tile)
    one_row_per_step_kernel[grid](table, indices, weights, out, bag_size, dim, BLOCK_D=block_d)
    return out
