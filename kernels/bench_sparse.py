"""Row-sparse vs dense value-table training step (issue #3's optional item): what a sparse gradient saves — one run.

    python kernels/bench_sparse.py            # full: 1M-row table, 16/256/2048 tokens (~5 min, 2-core CPU, 15 GB)
    python kernels/bench_sparse.py --quick    # small table, seconds (tests run it with --out <tmp>)

Setup (Memory Layers at Scale): a value table of n_keys² = 1M rows × dim (default 256 fp32 = 1 GiB, so that the dense table,
its gradient, both Adam moments and the sparse runs' own moments fit a 24 GB machine; the paper's 1M × 1024 is 4 GiB per
copy), read by heads=4 × topk=32 product-key lookups per token (a real ``ProductKeyMemory.lookup`` of random inputs at
initialisation). Per token count, the value-table part of one training step, four ways:

* dense AdamW:              ``embedding_bag`` backward (zero-filled dense R × d gradient) + ``torch.optim.AdamW``
                            (its default implementation: what memlab.lab.train uses today)
* dense AdamW fused:        the same gradient + ``torch.optim.AdamW(fused=True)`` (one pass over the table)
* row-sparse RowSparseAdam: ``embedding_bag(sparse=True)`` backward (COO gradient of the rows read) +
                            ``memlab.RowSparseAdam`` (lazy AdamW, fused kernel on the gathered rows)
* row-sparse SparseAdam:    the same sparse gradient + ``torch.optim.SparseAdam`` (torch's lazy Adam, for reference)

timed as ``backward`` (per gradient layout), ``step`` (the same gradient stepped again) and ``total`` = backward +
step + ``zero_grad(set_to_none=True)`` (as memlab's train loop does). The per-sample weights do not require grad: their
gradient is the same in both layouts and is not part of the table's update. The four methods share one table storage
(each has its own gradient and moments; peak RSS ~15 GB); values drift during timing, which does not change the work.

Bytes written (an ideal implementation's minimum): dense = 4·R·d·e (gradient, parameter, two moments over the whole
table); row-sparse = 4·U·d·e over the U distinct rows read. torch's sparse backward also writes the N·H·k uncoalesced
rows before coalescing; not counted. Timing: ``memlab.lab.timing.time_side_by_side`` (interleaved rounds, medians).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

# bench.py only defines helpers at import (and sets TRITON_INTERPRET=0 if unset when there is no GPU)
from bench import (  # noqa: E402
    DEVICE, bench_arguments, parse_bench_arguments, result_header, start_log, write_result,
)

import memlab  # noqa: E402
from memlab.lab.timing import time_side_by_side  # noqa: E402

METHODS = {  # name: (row-sparse gradient?, optimizer factory)
    "dense AdamW": (False, lambda ps, lr: torch.optim.AdamW(ps, lr=lr)),  # memlab.lab.train's optimizer today
    "dense AdamW fused": (False, lambda ps, lr: torch.optim.AdamW(ps, lr=lr, fused=True)),
    "row-sparse RowSparseAdam": (True, lambda ps, lr: memlab.RowSparseAdam(ps, lr=lr)),  # fused on CPU/CUDA
    "row-sparse SparseAdam": (True, lambda ps, lr: torch.optim.SparseAdam(ps, lr=lr)),
}
LAYOUTS = {False: "dense grad", True: "row-sparse grad"}


def step_candidates(base: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, lr: float) -> dict:
    """Callables: the backward of the read per gradient layout, and per method its optimizer step alone and the
    whole value-table step (backward + step + zero_grad)."""
    grad_out = torch.randn(idx.shape[0], base.shape[1], device=base.device, dtype=base.dtype)
    saved_grads, cands = {}, {}
    for name, (sparse, make_optimizer) in METHODS.items():
        param = torch.nn.Parameter(base)  # shares base's storage; its own .grad and optimizer state
        opt = make_optimizer([param], lr)
        out = memlab.embedding_bag(param, idx, w, backend="torch", check=False, sparse=sparse)
        if sparse not in saved_grads:  # one gradient per layout, stepped again by every method of that layout
            out.backward(grad_out, retain_graph=True)
            saved_grads[sparse] = param.grad

            def backward(out=out, param=param):
                out.backward(grad_out, retain_graph=True)
                param.grad = None

            cands[f"backward: {LAYOUTS[sparse]}"] = backward
        param.grad = saved_grads[sparse]
        opt.step()  # allocate the moments outside the timed calls
        param.grad = None

        def step(opt=opt, param=param, grad=saved_grads[sparse]):
            param.grad = grad
            opt.step()
            param.grad = None

        def total(out=out, opt=opt):
            out.backward(grad_out, retain_graph=True)
            opt.step()
            opt.zero_grad(set_to_none=True)

        cands[f"step: {name}"] = step
        cands[f"total: {name}"] = total
    return cands


def main(argv=None) -> int:
    ap = bench_arguments(__doc__.split("\n")[0], "small table, a few seconds (for tests)",
                         "directory for sparse-<device>.json")
    ap.add_argument("--dim", type=int, default=None, help="value dim (default 256; 32 with --quick)")
    args = parse_bench_arguments(ap, argv)
    n_keys, heads, topk = (64, 4, 8) if args.quick else (1024, 4, 32)
    dim = args.dim or (32 if args.quick else 256)
    token_counts = (4, 64) if args.quick else (16, 256, 2048)
    log, name = start_log(args)
    rows = n_keys**2
    e = torch.empty((), dtype=torch.float32).element_size()
    log(f"value table {rows} rows × {dim} fp32 ({rows * dim * e / 2**30:.2f} GiB), heads={heads}, topk={topk}")
    torch.manual_seed(0)
    values = memlab.SharedValues(rows, dim).to(DEVICE)
    pkm = memlab.ProductKeyMemory(dim, n_keys=n_keys, heads=heads, topk=topk, values=values).to(DEVICE)
    base = values.weight.detach()
    results = []
    for n in token_counts:
        with torch.no_grad():
            indices, weights = pkm.lookup(torch.randn(n, dim, device=DEVICE))
        idx, w = indices.flatten(-2), weights.flatten(-2)  # one bag of heads·topk rows per token, as pkm.read
        touched = int(idx.unique().numel())
        bytes_written = {"dense": 4 * rows * dim * e, "row-sparse": 4 * touched * dim * e}
        times = time_side_by_side(step_candidates(base, idx, w, lr=1e-3), rounds=3 if args.quick else 7,
                                  min_time_per_round=1e-3 if args.quick else 2e-3, warmup=1)
        row = {
            "tokens": n, "reads": idx.numel(), "rows_touched": touched, "fraction_touched": touched / rows,
            "bytes_written": bytes_written,
            "bytes_ratio_dense_over_sparse": bytes_written["dense"] / bytes_written["row-sparse"],
            "time_s": times,
            "speedup_total_vs": {
                base_m: {m: times[f"total: {base_m}"] / times[f"total: {m}"] for m in METHODS}
                for base_m in ("dense AdamW", "dense AdamW fused")
            },
        }
        results.append(row)
        log(f"tokens={n:5d}  reads={row['reads']:7d}  rows touched={touched:7d} ({100 * row['fraction_touched']:.2f}%)  "
            f"bytes written: dense {bytes_written['dense'] / 1e6:.0f} MB, row-sparse "
            f"{bytes_written['row-sparse'] / 1e6:.1f} MB (x{row['bytes_ratio_dense_over_sparse']:.0f} less)")
        log("    backward: " + "  ".join(f"{lay} {times[f'backward: {lay}'] * 1e3:.2f} ms" for lay in LAYOUTS.values()))
        for m in METHODS:
            log(f"    {m:26s} step {times[f'step: {m}'] * 1e3:9.2f} ms  total {times[f'total: {m}'] * 1e3:9.2f} ms  "
                f"x{row['speedup_total_vs']['dense AdamW'][m]:.1f} vs dense AdamW, "
                f"x{row['speedup_total_vs']['dense AdamW fused'][m]:.1f} vs dense AdamW fused")
    payload = {
        **result_header(name, args.quick),
        "table": {"n_keys": n_keys, "rows": rows, "dim": dim, "dtype": "float32", "heads": heads, "topk": topk},
        "timing": "memlab.lab.timing.time_side_by_side (medians, interleaved)",
        "measured": "value-table part of a step: backward of the read (table grad only), optimizer step, "
                    "total = backward + step + zero_grad(set_to_none=True)",
        "bytes_written_estimate": "dense 4·R·d·e (grad + param + 2 moments); row-sparse 4·U·d·e (U distinct rows read)",
        "results": results, "log": log.lines,
    }
    write_result(args.out, "sparse-", name, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
