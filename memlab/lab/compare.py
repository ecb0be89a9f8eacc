"""``python -m memlab compare``: nn.Linear against memlab's memory layers at one realistic size.

For each module: parameters, table/value memory, FLOPs per token (counted, and by the paper's formula where the paper
gives one), and CPU time per call at 1, 16 and 2048 tokens as a ratio to nn.Linear — all candidates measured side by
side in the same rounds (``memlab.lab.timing``). Then the identities of ``memlab.lab.identities`` as pass/fail.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import torch
from torch import nn

from .. import environment_report
from ..layers.hash_memory import HashMemory
from ..layers.memory_block import MemoryBlock
from ..layers.memory_plus import MemoryPlus
from ..layers.product_key_memory import ProductKeyMemory
from .io import atomic_write_json
from .tables import format_table
from .timing import ratios_to, time_side_by_side

TOKEN_COUNTS = (1, 16, 2048)


@dataclass
class Candidate:
    name: str
    module: nn.Module
    formula: str                 # the paper's per-token FLOP formula, as text ("" when the paper gives none)
    formula_flops: int | None

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    @property
    def memory_mb(self) -> float:
        """fp32 MB of the table/value memory (0 for nn.Linear, whose weights are not a memory)."""
        m = getattr(self.module, "memory_bytes", None)
        return m(torch.float32) / 1e6 if m else 0.0

    @property
    def counted_flops(self) -> int:
        m = self.module
        return m.flops_per_token() if hasattr(m, "flops_per_token") else m.in_features * m.out_features


def build_candidates(d_model: int, tau: int, n_keys: int, heads: int, topk: int) -> list[Candidate]:
    """The five modules of the comparison, each mapping (..., d_model) → (..., d_model)."""
    torch.manual_seed(0)
    k = d_model // tau
    hidden = MemoryBlock(d_model, tau=tau).hidden_features
    return [
        Candidate("nn.Linear", nn.Linear(d_model, d_model, bias=False), "d_in*d_out", d_model * d_model),
        Candidate("HashMemory", HashMemory(d_model, d_model, tau=tau), "K*d_out", k * d_model),
        Candidate("MemoryBlock", MemoryBlock(d_model, tau=tau), "K*(tau+e)K + K*d", k * hidden + k * d_model),
        Candidate("ProductKeyMemory", ProductKeyMemory(d_model, n_keys=n_keys, heads=heads, topk=topk), "", None),
        Candidate("MemoryPlus", MemoryPlus(d_model, n_keys=n_keys, heads=heads, topk=topk), "", None),
    ]


def measure(candidates: list[Candidate], token_counts=TOKEN_COUNTS, rounds: int = 9) -> dict[int, dict[str, float]]:
    """Seconds per forward call (no grad) for every candidate and token count, measured side by side."""
    times = {}
    for n in token_counts:
        x = torch.randn(n, candidates[0].module.in_features)
        with torch.inference_mode():
            times[n] = time_side_by_side({c.name: (lambda m=c.module: m(x)) for c in candidates}, rounds=rounds)
    return times


def comparison_table(candidates: list[Candidate], times: dict[int, dict[str, float]],
                     baseline: str = "nn.Linear") -> str:
    """One row per module: sizes, FLOPs, and time per call — the baseline in ms, the others as a ratio to it."""
    rows = []
    for c in candidates:
        row = {
            "module": c.name, "params": f"{c.params / 1e6:.2f}M", "memory MB": f"{c.memory_mb:.1f}",
            "FLOPs/token": f"{c.counted_flops / 1e6:.3f}M", "paper formula": c.formula or "-",
            "formula FLOPs": f"{c.formula_flops / 1e6:.3f}M" if c.formula_flops else "-",
        }
        for n, t in times.items():
            ratio = ratios_to(t, baseline)[c.name]
            row[f"time @{n} tok"] = f"{t[c.name] * 1e3:.3f} ms" if c.name == baseline else f"{ratio:.2f}x"
        rows.append(row)
    return format_table(rows, left_aligned=["module"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--d-model", type=int, default=1024, help="model width d (default 1024)")
    parser.add_argument("--tau", type=int, default=8, help="MemoryFormer bits per chunk (default 8)")
    parser.add_argument("--n-keys", type=int, default=512,
                        help="product-key half-keys n; n² values (default 512 → 262,144 values, 1.07 GB fp32; "
                             "the paper's 1024 gives ~1M values, 4.3 GB)")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--topk", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (median reported)")
    parser.add_argument("--tokens", type=int, nargs="+", default=list(TOKEN_COUNTS), help="token counts to time")
    parser.add_argument("--json", metavar="PATH", help="also write the results to PATH (atomically)")


def run(args: argparse.Namespace) -> int:
    # Let the identity check exercise the Triton kernels on the CPU through the interpreter when there is no GPU.
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from .identities import run_checks

    env = environment_report()
    print(f"memlab compare: d={args.d_model}, tau={args.tau}, PKM n_keys={args.n_keys} ({args.n_keys**2:,} values), "
          f"heads={args.heads}, top-{args.topk}")
    print(f"device: {env['device']}, torch {env['torch']}, {env['cpu_threads']} CPU threads\n")
    candidates = build_candidates(args.d_model, args.tau, args.n_keys, args.heads, args.topk)
    times = measure(candidates, tuple(args.tokens), rounds=args.rounds)
    print(comparison_table(candidates, times))
    print("\ntime: nn.Linear in ms per forward call (median of interleaved rounds); others as a ratio to it "
          "(<1 = faster).\nFLOPs are multiply-adds per token; memory is the fp32 table/value memory.\n")

    checks = run_checks()
    width = max(len(name) for name, _, _ in checks)
    for name, passed, detail in checks:
        mark = "skip" if passed is None else ("PASS" if passed else "FAIL")
        print(f"[{mark}] {name.ljust(width)}  {detail}")
    failed = [name for name, passed, _ in checks if passed is False]

    if args.json:
        atomic_write_json(args.json, {
            "environment": env,
            "config": {k: getattr(args, k) for k in ("d_model", "tau", "n_keys", "heads", "topk", "rounds")},
            "modules": [{
                "name": c.name, "params": c.params, "memory_mb": c.memory_mb, "flops_per_token": c.counted_flops,
                "formula": c.formula, "formula_flops": c.formula_flops,
                "seconds": {str(n): t[c.name] for n, t in times.items()},
                "ratio_to_linear": {str(n): ratios_to(t, "nn.Linear")[c.name] for n, t in times.items()},
            } for c in candidates],
            "checks": [{"name": n, "passed": p, "detail": d} for n, p, d in checks],
        })
        print(f"\nwrote {args.json}")
    return 1 if failed else 0
