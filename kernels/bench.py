"""memlab kernel benchmarks: bytes moved, time, GB/s, % of peak bandwidth, ratio to F.embedding_bag — one run.

    python kernels/bench.py            # full run (~3.5 min on a 2-core CPU), writes kernels/results/<device>.json
    python kernels/bench.py --runs 3   # three full runs in one process: the first run's rows + each ratio's spread
    python kernels/bench.py --quick    # small sizes, a few seconds (tests use it with --out to a temp dir)
    python kernels/bench.py --install-peer .peer   # also the PyPI product-key-memory package, installed into .peer
    python kernels/bench.py --peer .peer           # ... or already installed there

What is measured where:
* CUDA: memlab's Triton kernels (forward; backward "atomic" and "reverse") against F.embedding_bag, timed with
  triton.testing.do_bench. Peak bandwidth = a measured device-to-device copy in the same run.
* CPU: the torch paths (Triton on CPU only runs in the interpreter, which is not a performance tool), timed with
  memlab.lab.timing.time_side_by_side (interleaved rounds, medians). Peak = a STREAM-like copy measured in the same run.
  Plus the HashMemory vs nn.Linear ladder: what each step of the fused CPU path bought, and forward+backward with a
  dense and a row-sparse table gradient.
* Product keys (``bench_product_keys``): ProductKeyMemory and MemoryPlus forward at 1 token against nn.Linear (one
  layer called again and again, and ``bench_product_keys_dram``'s stacks larger than the last-level cache), each
  layer's bytes per token (``memlab.lab.roofline.step_bytes``: query projection, half-keys, values read, gate
  projections) and its time as a multiple of what those bytes take at the measured copy bandwidth; then forward +
  backward at 2048 tokens against the most used PyPI implementation (``product-key-memory``'s ``PKM``), the same
  sizes side by side. The peer is optional: ``--peer DIR`` imports it from DIR, ``--install-peer DIR`` first runs
  ``pip install --target DIR --no-deps`` of it and its pure-Python imports (torch is the one already here). It is
  never a memlab dependency.

Every result file records the load average (``os.getloadavg``) before and after the run: on a shared machine a
ratio taken under load is noisier, and says so.

Regimes (MemoryFormer-base of MemoryFormer Table 1; the product-key defaults of Memory Layers at Scale):
* "memoryformer": K tables × 2^τ rows × d, bags of K rows from real hash addresses of random tokens — small, hot tables
  (every row is hit by ~N/2^τ tokens).
* "pkm": a large value table, bags of heads·top-k random rows — sparse. 1M × 1024 fp32 is 4 GB: on CPU the table is
  smaller (printed in the row), on CUDA it is the full 1M rows.

Bytes counted (the minimum traffic of an ideal kernel, each byte once):
  forward  = N·B·d·e (rows read) + N·B·(index + weight bytes) + N·d·e (output written)
  backward = N·B·d·e (grad_out re-read per contribution) + N·B·d·e (rows re-read for grad_w) + R·d·e (dense table
             gradient written; R = table rows) + N·B·(index + weight + grad_w bytes)
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "0")  # never time the interpreter

import memlab  # noqa: E402
from memlab import HashMemory  # noqa: E402
from memlab.lab.env import environment_report  # noqa: E402
from memlab.lab.io import atomic_write_json  # noqa: E402
from memlab.lab import roofline  # noqa: E402
from memlab.reading.kernels import cpu as cpu_kernel  # noqa: E402
from memlab.lab.timing import time_side_by_side  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def device_name() -> str:
    if CUDA:
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "CPU " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU " + (platform.processor() or platform.machine())


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def timed(candidates: dict, quick: bool) -> dict[str, float]:
    """Median seconds per call, all candidates measured in the same run."""
    if CUDA:
        import triton.testing

        return {k: triton.testing.do_bench(fn, warmup=25, rep=100 if not quick else 20) * 1e-3
                for k, fn in candidates.items()}
    return time_side_by_side(candidates, rounds=5 if quick else 9, min_time_per_round=1e-3 if quick else 4e-3)


def peak_bandwidth(quick: bool) -> float:
    """GB/s of a large tensor copy (read + write bytes), measured now: the practical peak on this device."""
    n = (16 if quick else 256) * 2**20 // 4
    src = torch.randn(n, device=DEVICE)
    dst = torch.empty_like(src)
    t = timed({"copy": lambda: dst.copy_(src)}, quick)["copy"]
    return 2 * n * 4 / t / 1e9


def bag_case(regime: str, dtype: torch.dtype, quick: bool):
    g = torch.Generator().manual_seed(0)
    if regime == "memoryformer":
        k, tau, d, n = (16, 8, 256, 256) if quick else (128, 8, 1024, 2048)
        hm = HashMemory(k * tau, d, tau=tau)
        idx, w = hm.address(torch.randn(n, k * tau, generator=g))
        table = hm.tables.detach()
        shape = f"{k}x2^{tau} rows x {d}, N={n}, B={k}"
    else:
        rows, d, n, b = (16384, 256, 128, 64) if quick else ((2**20, 1024, 2048, 128) if CUDA else (65536, 1024, 512, 128))
        table = torch.randn(rows, d, generator=g) * 0.02
        idx = torch.randint(0, rows, (n, b), generator=g)
        w = torch.softmax(torch.randn(n, b, generator=g), -1)
        shape = f"{rows} rows x {d}, N={n}, B={b}" + ("" if CUDA or quick else " (CPU: not 1M rows = 4 GB)")
    return table.to(DEVICE, dtype), idx.to(DEVICE), w.to(DEVICE, dtype), shape


def bag_bytes(table, idx, w, direction: str) -> int:
    n, b = idx.shape
    rows, d = table.shape
    e = table.element_size()
    meta = n * b * (idx.element_size() + w.element_size())
    if direction == "fwd":
        return n * b * d * e + meta + n * d * e
    return 2 * n * b * d * e + rows * d * e + meta + n * b * w.element_size()


def bench_bags(quick: bool, peak: float, log) -> list[dict]:
    results = []
    for regime in ("memoryformer", "pkm"):
        for dtype in (torch.float32, torch.bfloat16):
            table, idx, w, shape = bag_case(regime, dtype, quick)
            fwd = {"F.embedding_bag": lambda: F.embedding_bag(idx, table, mode="sum", per_sample_weights=w)}
            if CUDA:
                fwd["memlab triton"] = lambda: memlab.embedding_bag(table, idx, w, backend="triton", check=False)
            else:
                fwd["memlab torch"] = lambda: memlab.embedding_bag(table, idx, w, backend="torch", check=False)
            tt, ww = table.clone().requires_grad_(), w.clone().requires_grad_()
            g = torch.randn(idx.shape[0], table.shape[1], device=DEVICE, dtype=dtype)
            ref_out = F.embedding_bag(idx, tt, mode="sum", per_sample_weights=ww)
            bwd = {"F.embedding_bag": lambda: torch.autograd.grad(ref_out, [tt, ww], g, retain_graph=True)}
            if CUDA:
                for strategy in ("atomic", "reverse"):
                    out = memlab.embedding_bag(tt, idx, ww, backend="triton", check=False, backward=strategy)
                    bwd[f"memlab triton {strategy}"] = (
                        lambda out=out: torch.autograd.grad(out, [tt, ww], g, retain_graph=True))
            for direction, cands in (("fwd", fwd), ("bwd", bwd)):
                times = timed(cands, quick)
                nbytes = bag_bytes(table, idx, w, direction)
                base = times["F.embedding_bag"]
                for name, t in times.items():
                    row = {
                        "regime": regime, "shape": shape, "dtype": str(dtype).replace("torch.", ""),
                        "direction": direction, "kernel": name, "bytes": nbytes, "time_s": t,
                        "GBps": nbytes / t / 1e9, "pct_peak": 100 * nbytes / t / 1e9 / peak,
                        "speedup_vs_F.embedding_bag": base / t,
                    }
                    results.append(row)
                    log(f"{regime:12s} {row['dtype']:8s} {direction} {name:24s} {nbytes / 1e6:9.1f} MB "
                        f"{t * 1e3:9.3f} ms {row['GBps']:7.1f} GB/s {row['pct_peak']:5.1f}% peak "
                        f"x{row['speedup_vs_F.embedding_bag']:.2f} vs F.embedding_bag")
    return results


def bench_hash_vs_linear(quick: bool, log) -> list[dict]:
    """HashMemory(d, d, τ=8) forward vs nn.Linear(d, d, bias=False), side by side; one column per optimisation step.

    Two input regimes, each measured side by side:
    * "same input" (the issue's setting): one x, called repeatedly. Linear's 4 MB of weights and, at ≤ 16 tokens,
      HashMemory's 0.5–8 MB of hashed rows stay in cache between calls.
    * "new input each call": a cycle of inputs that together touch ≥ 256 MB of rows, so HashMemory's rows come from
      DRAM (the 128 MB table does not fit in cache) while Linear's weights stay cached: the pessimistic case for the
      memory layer. In a deep model neither layer's weights would still be cached.
    """
    d = 256 if quick else 1024
    token_counts = (1, 16) if quick else (1, 4, 16, 256, 2048)
    torch.manual_seed(0)
    hm = HashMemory(d, d, tau=8).to(DEVICE)
    hm_triton = HashMemory(d, d, tau=8, backend="triton").to(DEVICE) if CUDA else None
    if hm_triton is not None:
        hm_triton.tables = hm.tables  # same weights: the fused Triton kernel (memlab.reading.kernels.triton_hash)
    lin = torch.nn.Linear(d, d, bias=False).to(DEVICE)
    c_kernel = not CUDA and cpu_kernel.available()
    results = []
    log(f"HashMemory({d}, {d}, tau=8) vs nn.Linear({d}, {d}): ratio = Linear time / HashMemory time (>1: faster); "
        f"C kernel available: {cpu_kernel.available()}; threads: {torch.get_num_threads()}")
    for n in token_counts:
        x = torch.randn(n, d, device=DEVICE)
        row_bytes = n * hm.num_tables * d * 4
        xs = [torch.randn(n, d, device=DEVICE) for _ in range(min(512, max(2, -(-(256 << 20) // row_bytes))))]
        with torch.no_grad():
            idx, w = hm.address(x)
            cands = {
                "nn.Linear": lambda: lin(x),
                "unfused (read(address(x)))": lambda: hm.read(*hm.address(x)),
                "fused torch ops": lambda: memlab.hash_read(x, hm.tables, tau=8, backend="torch"),
                "HashMemory.forward (default)": lambda: hm(x),
                "gather only (F.embedding_bag)": lambda: F.embedding_bag(idx, hm.tables, mode="sum",
                                                                         per_sample_weights=w),
            }
            if c_kernel:
                cands["C kernel, 1 thread"] = lambda: cpu_kernel.hash_forward(
                    x, hm.tables, None, hm.num_tables, hm.tau, hm.temperature, False, threads=1)
            if hm_triton is not None:
                cands["fused Triton kernel"] = lambda: hm_triton(x)
            times = timed(cands, quick)
            lin_cycle, hm_cycle = itertools.cycle(xs), itertools.cycle(xs)
            fresh = timed({"nn.Linear": lambda: lin(next(lin_cycle)),
                           "HashMemory.forward (default)": lambda: hm(next(hm_cycle))}, quick)
        train = timed({"nn.Linear": lambda: lin(x), "HashMemory.forward (default)": lambda: hm(x)}, quick)
        xg, g = x.clone().requires_grad_(), torch.randn(n, d, device=DEVICE)
        step = timed({  # forward + backward, gradients for x and the weights (what a training step pays)
            "nn.Linear": lambda: torch.autograd.grad(lin(xg), [xg, lin.weight], g),
            "HashMemory (default)": lambda: torch.autograd.grad(hm(xg), [xg, hm.tables], g),
            "HashMemory, torch ops": lambda: torch.autograd.grad(
                memlab.hash_read(xg, hm.tables, tau=8, backend="torch"), [xg, hm.tables], g),
            "HashMemory, row-sparse grad": lambda: torch.autograd.grad(
                memlab.hash_read(xg, hm.tables, tau=8, sparse=True), [xg, hm.tables], g),
            "HashMemory, row-sparse grad, torch ops": lambda: torch.autograd.grad(
                memlab.hash_read(xg, hm.tables, tau=8, backend="torch", sparse=True), [xg, hm.tables], g),
        }, quick)
        row = {"tokens": n, "d": d, "tau": 8, "inference_s": times, "train_forward_s": train,
               "new_input_s": fresh, "new_input_pool": len(xs),
               "ratio_linear_over": {k: times["nn.Linear"] / t for k, t in times.items()},
               "new_input_ratio_linear_over_hash": fresh["nn.Linear"] / fresh["HashMemory.forward (default)"],
               "train_ratio_linear_over_hash": train["nn.Linear"] / train["HashMemory.forward (default)"],
               "fwd_bwd_s": step, "fwd_bwd_ratio_linear_over": {k: step["nn.Linear"] / t for k, t in step.items()}}
        results.append(row)
        log(f"  N={n:5d} " + "  ".join(f"{k}: {t * 1e6:.0f}us (x{times['nn.Linear'] / t:.2f})" for k, t in times.items())
            + f"  | new input each call: x{row['new_input_ratio_linear_over_hash']:.2f}"
            + f"  | grad-enabled forward: x{row['train_ratio_linear_over_hash']:.2f}"
            + "  | forward+backward: " + "  ".join(f"{k} x{r:.2f}" for k, r in row["fwd_bwd_ratio_linear_over"].items()
                                                 if k != "nn.Linear"))
    return results


PEER_REQUIREMENTS = ["product-key-memory==0.3.0", "colt5-attention", "einops", "local-attention", "hyper-connections"]


def load_peer(peer: Path | None, install: Path | None, log):
    """The PyPI ``product-key-memory`` package's ``PKM`` class, or None. ``install``: pip-install it (no
    dependencies: torch is the one already here) into that directory first; ``peer``: import it from there."""
    where = install or peer
    if where is None:
        return None
    if install is not None:
        import subprocess

        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target",
                        str(install), "--no-deps", *PEER_REQUIREMENTS], check=True)
    sys.path.insert(0, str(Path(where).resolve()))
    try:
        from product_key_memory import PKM
    except ImportError as error:
        log(f"peer: product-key-memory could not be imported from {where} ({error}); try --install-peer {where}")
        return None
    import importlib.metadata

    try:
        version = importlib.metadata.version("product-key-memory")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    log(f"peer: product-key-memory {version} (imported from the --peer/--install-peer directory)")
    return PKM


def bench_product_keys(quick: bool, peak: float, log, peer_class=None) -> dict:
    """ProductKeyMemory and MemoryPlus at 1 token against nn.Linear, with each layer's bytes per token; then
    ProductKeyMemory forward+backward against the PyPI peer at 2048 tokens (when given).

    Regime: "same input each call", each candidate repeated for ≥ 20 ms per round, so a layer whose weights fit the
    last-level cache (Linear's 4 MB, PKM's 12.5 MB) reads them from there after its first call; the bytes multiple
    divides by the measured DRAM copy bandwidth, so a cache-resident layer can come out below 1×. Notebook 09
    measures the DRAM regime (stacks of layers larger than the cache)."""
    d, n_keys, heads, topk = (256, 64, 4, 8) if quick else (1024, 512, 4, 32)
    torch.manual_seed(0)
    lin = torch.nn.Linear(d, d, bias=False)
    pkm = memlab.ProductKeyMemory(d, n_keys=n_keys, heads=heads, topk=topk)
    mplus = memlab.MemoryPlus(d, n_keys=n_keys, heads=heads, topk=topk)
    layers = {"nn.Linear": lin, "ProductKeyMemory": pkm, "MemoryPlus": mplus}
    x = torch.randn(1, d)
    with torch.inference_mode():
        t1 = timed({k: (lambda m=m: m(x)) for k, m in layers.items()}, quick) if quick else time_side_by_side(
            {k: (lambda m=m: m(x)) for k, m in layers.items()}, rounds=9, min_time_per_round=0.02)
    one_token = []
    for name, m in layers.items():
        parts = roofline.step_bytes(m, 1)
        nbytes = sum(parts.values())
        row = {"layer": name, "time_s": t1[name], "ratio_to_linear": t1[name] / t1["nn.Linear"], "bytes": nbytes,
               "bytes_parts": parts, "bytes_ratio_to_linear": nbytes / sum(roofline.step_bytes(lin, 1).values()),
               "bytes_time_s": nbytes / (peak * 1e9), "multiple_of_bytes_time": t1[name] / (nbytes / (peak * 1e9))}
        one_token.append(row)
        log(f"1 token  {name:17s} {t1[name] * 1e6:8.1f} us  x{row['ratio_to_linear']:.2f} of Linear  bytes "
            f"{nbytes / 1e6:6.2f} MB (x{row['bytes_ratio_to_linear']:.2f} of Linear's)  = "
            f"{row['multiple_of_bytes_time']:.2f} x the time its bytes take at {peak:.1f} GB/s  ("
            + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in parts.items()) + ")")
    result = {"config": {"d": d, "n_keys": n_keys, "heads": heads, "topk": topk}, "one_token": one_token}
    del pkm, mplus
    result["one_token_dram"] = bench_product_keys_dram(d, n_keys, heads, topk, quick, peak, log)
    if peer_class is None:
        log("peer: not run (pass --peer DIR or --install-peer DIR to compare with the PyPI product-key-memory)")
        return result
    n = 64 if quick else 2048
    k_dim = d // 2
    torch.manual_seed(0)
    values = memlab.SharedValues(n_keys**2, d)
    ours = memlab.ProductKeyMemory(d, n_keys=n_keys, heads=heads, topk=topk, k_dim=k_dim, query_norm="layer",
                                   values=values)
    peer = peer_class(d, heads=heads, num_keys=n_keys, topk=topk, dim_head=k_dim // 2)
    xs = torch.randn(1, n, d, requires_grad=True)
    gy = torch.randn(1, n, d)

    def step(module, sparse=None):
        def call():
            if sparse is not None:
                values.sparse_grad = sparse
            module(xs).backward(gy)
            xs.grad = None
            for p in module.parameters():
                p.grad = None
        return call

    cands = {"memlab ProductKeyMemory (dense value grad)": step(ours, False),
             "memlab ProductKeyMemory (row-sparse value grad)": step(ours, True),
             "product-key-memory PKM (PyPI)": step(peer)}
    times = time_side_by_side(cands, rounds=3 if quick else 5, min_time_per_round=1e-3, warmup=1)
    base = times["product-key-memory PKM (PyPI)"]
    result["peer"] = {"tokens": n, "k_dim": k_dim, "times_s": times,
                      "speedup_over_peer": {k: base / t for k, t in times.items()},
                      "notes": "same d, heads, n_keys, top-k, query width; memlab with query_norm='layer' (LayerNorm "
                               "over each head's query), the peer with its default LayerNorm over each query half; "
                               "both fp32 on the CPU, forward + backward of every parameter and the input"}
    for k, t in times.items():
        log(f"{n} tokens fwd+bwd  {k:48s} {t * 1e3:9.1f} ms  x{base / t:.2f} vs the PyPI peer")
    return result


def bench_product_keys_dram(d: int, n_keys: int, heads: int, topk: int, quick: bool, peak: float, log) -> list[dict]:
    """The 1-token comparison in the DRAM regime: a stack of copies of each layer whose own weights exceed twice the
    last-level cache (``memlab.lab.roofline.build_stack``; the product-key layers share one value pool, as Memory
    Layers at Scale shares it across memory layers), run layer by layer on a new input each call and side by side
    (``roofline.time_decode``), as a decode step through a model reads every layer's weights from DRAM. The
    single-layer regime above flatters whichever layer fits the cache (Linear's 4 MB); notebook 09 measures the same
    at every batch size."""
    llc = roofline.last_level_cache_bytes()
    min_bytes = llc // 8 if quick else 2 * llc
    values = memlab.SharedValues(n_keys**2, d)
    layer_kw = dict(values=values, n_keys=n_keys, heads=heads, topk=topk)
    stacks = {"nn.Linear": [torch.nn.Linear(d, d, bias=False).requires_grad_(False)
                            for _ in range(int(min_bytes // (4 * d * d)) + 1)],
              "ProductKeyMemory": roofline.build_stack("PKM", d, min_bytes, **layer_kw),
              "MemoryPlus": roofline.build_stack("Memory+", d, min_bytes, **layer_kw)}
    per_layer = roofline.time_decode(stacks, 1, d, rounds=5 if quick else 9,
                                     min_time_per_round=0.005 if quick else 0.05)
    linear_bytes = sum(roofline.step_bytes(stacks["nn.Linear"][0], 1).values())
    rows = []
    for name, stack in stacks.items():
        nbytes = sum(roofline.step_bytes(stack[0], 1).values())
        row = {"layer": name, "layers_in_stack": len(stack),
               "stack_weight_bytes": sum(roofline.weight_bytes(layer, values) for layer in stack),
               "time_s": per_layer[name], "ratio_to_linear": per_layer[name] / per_layer["nn.Linear"],
               "bytes": nbytes, "bytes_ratio_to_linear": nbytes / linear_bytes,
               "multiple_of_bytes_time": per_layer[name] / (nbytes / (peak * 1e9))}
        rows.append(row)
        log(f"1 token, DRAM regime ({len(stack)} layers, {row['stack_weight_bytes'] / 2**20:.0f} MiB > 2 x the "
            f"{llc / 2**20:.0f} MiB cache)  {name:17s} {row['time_s'] * 1e6:8.1f} us per layer  "
            f"x{row['ratio_to_linear']:.2f} of Linear  = {row['multiple_of_bytes_time']:.2f} x its bytes' time")
    return rows


def bench_arguments(description: str, quick_help: str, out_help: str,
                    runs: int | None = None) -> argparse.ArgumentParser:
    """The options every memlab benchmark script takes: --quick, --out, --threads; and --runs (default ``runs``) for
    a script that repeats its whole measurement."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--out", type=Path, default=HERE / "results", help=out_help)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before measuring")
    if runs is not None:
        ap.add_argument("--runs", type=int, default=runs,
                        help=f"repeat the whole measurement this many times in one process (default {runs}); the "
                             "file records each headline figure in every run and its min and max (the spread a "
                             "verdict must survive)")
    return ap


def parse_bench_arguments(ap: argparse.ArgumentParser, argv) -> argparse.Namespace:
    args = ap.parse_args(argv)
    if getattr(args, "runs", 1) < 1:
        ap.error(f"--runs {args.runs}: give at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def start_log(args: argparse.Namespace) -> tuple["Log", str]:
    """The run's log, opened with the device, torch version, threads and mode; and the device's name."""
    log, name = Log(), device_name()
    log(f"device: {name}  torch {torch.__version__}  threads {torch.get_num_threads()}  quick={args.quick}")
    return log, name


class Log:
    """Prints each line and keeps it: the result file stores the printed log."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)


def write_result(out: Path, prefix: str, device: str, payload: dict) -> Path:
    """Write a benchmark's payload to ``out/<prefix><device slug>.json`` atomically (temp file + ``os.replace``) and
    say where."""
    path = out / f"{prefix}{slug(device)}.json"
    atomic_write_json(path, payload)
    print(f"wrote {path}")
    return path


def result_header(name: str, quick: bool) -> dict:
    """The fields every result file starts with: device, date, versions, threads."""
    return {"device": name, "device_type": DEVICE, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "quick": quick, "versions": environment_report(), "threads": torch.get_num_threads()}


def headline(payload: dict) -> dict[str, float]:
    """The ratios a run's verdicts rest on, flat ("section | row | column" → value): what ``--runs`` compares."""
    out = {}
    for b in payload["bags"]:
        out[f"bag | {b['regime']} {b['direction']} {b['dtype']} | {b['kernel']} | % of peak"] = b["pct_peak"]
    for row in payload["hash_vs_linear"]:
        n = row["tokens"]
        for name, ratio in row["ratio_linear_over"].items():
            out[f"HashMemory vs Linear | {n} tokens | {name} | Linear time / time"] = ratio
        for name, ratio in row["fwd_bwd_ratio_linear_over"].items():
            out[f"HashMemory vs Linear, forward+backward | {n} tokens | {name} | Linear time / time"] = ratio
    pk = payload.get("product_keys") or {}
    for regime in ("one_token", "one_token_dram"):
        for row in pk.get(regime, []):
            out[f"product keys, {regime.replace('_', ' ')} | {row['layer']} | time / Linear time"] = row["ratio_to_linear"]
    for name, speedup in (pk.get("peer") or {}).get("speedup_over_peer", {}).items():
        out[f"product keys vs PyPI peer, forward+backward | {name} | speed-up"] = speedup
    return out


def spread(headlines: list[dict[str, float]]) -> dict[str, dict]:
    """For every headline ratio: the first (recorded) run's value, the min and max over all runs, and every value."""
    return {key: {"recorded": headlines[0][key], "min": min(h[key] for h in headlines),
                  "max": max(h[key] for h in headlines), "values": [h[key] for h in headlines]}
            for key in headlines[0] if all(key in h for h in headlines)}


def measure(args, log, peer_class) -> dict:
    """One complete run of every section (what ``--runs`` repeats)."""
    load_before = os.getloadavg()
    peak = peak_bandwidth(args.quick)
    log(f"peak bandwidth (measured tensor copy, read+write): {peak:.1f} GB/s")
    log(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    bags = bench_bags(args.quick, peak, log)
    hvl = bench_hash_vs_linear(args.quick, log)
    pk = bench_product_keys(args.quick, peak, log, peer_class) if not CUDA else None
    load_after = os.getloadavg()
    log(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    return {"peak_GBps": peak, "load_average": {"before": list(load_before), "after": list(load_after)},
            "bags": bags, "hash_vs_linear": hvl, "product_keys": pk}


def main(argv=None) -> int:
    ap = bench_arguments(__doc__.split("\n")[0], "small sizes, a few seconds (for tests)", "directory for <device>.json",
                         runs=1)  # the file keeps the first run's rows, and each headline ratio's spread
    ap.add_argument("--peer", type=Path, default=None, help="import the PyPI product-key-memory from this directory")
    ap.add_argument("--install-peer", type=Path, default=None,
                    help="pip install --target DIR --no-deps the PyPI product-key-memory (and its pure-Python "
                         "imports) first, then compare with it")
    args = parse_bench_arguments(ap, argv)
    log, name = start_log(args)
    peer_class = load_peer(args.peer, args.install_peer, log)
    runs = []
    for i in range(args.runs):
        if args.runs > 1:
            log(f"--- run {i + 1} of {args.runs}")
        runs.append(measure(args, log, peer_class))
    payload = {
        **result_header(name, args.quick),
        "peak_method": "torch copy_ of a large fp32 tensor, 2 x bytes / time",
        "timing": "triton.testing.do_bench" if CUDA else "memlab.lab.timing.time_side_by_side (medians, interleaved)",
        **runs[0], "runs": args.runs, "spread": spread([headline(r) for r in runs]),
        "peak_GBps_all_runs": [r["peak_GBps"] for r in runs], "log": log.lines,
    }
    write_result(args.out, "", name, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
