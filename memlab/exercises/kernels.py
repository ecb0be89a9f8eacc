"""Checker for notebook 04's build exercise: the one-row weighted EmbeddingBag as a Triton kernel.

The student writes a Triton kernel and the Python launcher that runs it; the checker calls the launcher on small cases
(odd widths, repeated rows in a bag, fp16 and fp32 tables, zero weights) and compares with a float64 reference of

    out[n, :] = Σ_j w[n, j] · table[idx[n, j], :]

Tensors go to CUDA when a GPU is present, else stay on the CPU, where the kernel must run under Triton's interpreter
(``TRITON_INTERPRET=1`` set before ``triton`` is imported). The shapes are tiny: each program costs milliseconds there.
"""
from __future__ import annotations

import torch

from .verdict import Mismatch, compare, run_cases

__all__ = ["check_one_row_kernel"]

_HINT = ("program (n, t) owns bag n and columns [t·BLOCK_D, (t+1)·BLOCK_D): loop j over the bag, load idx[n, j] and "
         "w[n, j], load that row's columns (masked), accumulate w·row in fp32, store once (cast to the table's dtype); "
         "launch a grid of (bags, cdiv(dim, BLOCK_D)) programs")

# (dtype) -> (atol, rtol) against a float64 reference computed from the same (rounded) table and weights
_TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (1e-2, 1e-2)}


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _reference(table: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted bag in float64: torch's own gather and sum (what ``F.embedding_bag(mode="sum")`` computes)."""
    return (table.double()[indices] * weights.double().unsqueeze(-1)).sum(1)


def _diagnose(got: torch.Tensor, table, indices, weights, atol, rtol) -> str | None:
    """Name a common mistake when ``got`` matches a plausible wrong formula (None when none fits)."""
    def close(x):
        return bool(torch.allclose(got.detach().double().cpu(), x.cpu(), atol=atol, rtol=rtol))

    t, w = table.double(), weights.double()
    if close(t[indices].sum(1)):
        return "it equals the unweighted sum of the rows: the weights are ignored (multiply each row by w[n, j])"
    if indices.shape[1] > 1 and close(t[indices].mul(w.unsqueeze(-1)).sum(1) / indices.shape[1]):
        return "it equals the weighted mean: mode is 'sum', do not divide by the bag size"
    if indices.shape[1] > 1 and close(t[indices[:, :1]].mul(w[:, :1].unsqueeze(-1)).sum(1)):
        return "only the first entry of each bag is read: loop j over the whole bag"
    ref = _reference(table, indices, weights)
    cols = ((got.detach().double().cpu() - ref.cpu()).abs() > atol + rtol * ref.cpu().abs()).any(0).nonzero()
    if cols.numel() and int(cols[0]) > 0:
        return (f"columns 0–{int(cols[0]) - 1} are right but column {int(cols[0])} is not: check that the grid covers "
                f"cdiv(dim, BLOCK_D) column tiles and that each program offsets its columns by t·BLOCK_D")
    return None


def _case(fn, dim: int, indices, weights, dtype, *, rows: int = 9, seed: int = 0):
    """A thunk that runs ``fn`` on one case and raises ``Mismatch`` saying what is wrong."""
    def thunk():
        device = _device()
        gen = torch.Generator().manual_seed(seed)
        table = torch.randn(rows, dim, generator=gen).to(dtype).to(device)
        idx = torch.as_tensor(indices, dtype=torch.int64).to(device)
        w = (torch.as_tensor(weights, dtype=torch.float32) if weights is not None
             else torch.randn(idx.shape, generator=gen)).to(dtype).to(device)
        try:
            got = fn(table, idx, w)
        except RuntimeError as err:
            if "active drivers" in str(err):
                raise RuntimeError(f"{err} — no GPU here, so Triton must run in its interpreter: set "
                                   "os.environ['TRITON_INTERPRET'] = '1' before triton is first imported "
                                   "(restart the kernel and run the first cell)") from err
            raise
        if isinstance(got, torch.Tensor) and got.dtype != table.dtype:
            raise Mismatch(f"out has dtype {got.dtype}; it should have the table's dtype {table.dtype} (accumulate "
                           "in fp32, then cast when storing: acc.to(out_ptr.dtype.element_ty))")
        atol, rtol = _TOL[dtype]
        try:
            compare("out", got, _reference(table, idx, w), atol=atol, rtol=rtol)
        except Mismatch as wrong:
            why = _diagnose(got, table, idx, w, atol, rtol)
            raise Mismatch(f"{wrong}; {why}" if why else str(wrong)) from None
    return thunk


def check_one_row_kernel(fn):
    """Check a one-row-at-a-time weighted EmbeddingBag written in Triton (notebook 04, Exercise 1).

    The student writes ``fn(table, indices, weights) -> out``: a Python launcher that allocates ``out`` (bags, dim) in
    the table's dtype and launches their ``@triton.jit`` kernel on a grid of (bags, column tiles); each program walks
    its bag one entry at a time. ``table`` (rows, dim) is fp32 or fp16, ``indices`` (bags, B) int64, ``weights``
    (bags, B) in the table's dtype; all contiguous. The formula is the weighted bag both memory layers read with —
    MemoryFormer's y = Σ_k p(z_k)·T_k[h(z_k)] and a product-key memory's Σ softmax(s)·V[rows] (Memory Layers at
    Scale, §2) — i.e. ``F.embedding_bag(indices, table, mode="sum", per_sample_weights=weights)``. Compared with a
    float64 reference: 1e-5 for fp32 tables, 1e-2 for fp16.
    """
    cases = [
        ("fp32, dim=7, 4 bags of 3 distinct rows, random weights",
         _case(fn, 7, [[0, 1, 2], [3, 4, 5], [6, 7, 8], [8, 0, 4]], None, torch.float32)),
        ("fp32, dim=33 (not a power of two: masked tail), a row repeated inside a bag",
         _case(fn, 33, [[2, 2, 2], [0, 5, 0], [7, 1, 7], [3, 3, 8]], None, torch.float32, seed=1)),
        ("fp32, dim=1, one entry per bag",
         _case(fn, 1, [[4], [0], [4]], None, torch.float32, seed=2)),
        ("fp32, dim=33, zero weights (bag 0 all zero, others partly)",
         _case(fn, 33, [[1, 2, 3], [4, 4, 5], [6, 7, 8]], [[0.0, 0.0, 0.0], [1.5, 0.0, -2.0], [0.0, 0.25, 1.0]],
               torch.float32, seed=3)),
        ("fp16 table and weights, dim=33, repeated rows (output in fp16)",
         _case(fn, 33, [[1, 1, 6], [0, 8, 0], [5, 2, 3]], None, torch.float16, seed=4)),
        ("fp32, dim=130 (more columns than a 128-wide tile), 2 bags of 5",
         _case(fn, 130, [[0, 1, 2, 3, 4], [8, 8, 7, 6, 5]], None, torch.float32, seed=5)),
    ]
    return run_cases("one-row Triton kernel", cases, hint=_HINT)
