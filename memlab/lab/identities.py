"""The identities memlab's layers rest on, each as a check that returns (passed, detail).

``python -m memlab compare`` prints them as pass/fail; the tests assert the same facts in more depth.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from . import flops
from ..reading import kernels
from ..reading.bag import embedding_bag
from ..layers.hash_memory import HashMemory
from ..addressing.hashing import bucket_probability, bucket_probability_bruteforce
from ..layers.memory_block import MemoryBlock
from ..addressing.product_keys import bruteforce_topk, product_topk

TABLE5_MB = {0: 33.6, 1: 52.4, 2: 88.1, 3: 157.3}  # MemoryFormer Table 5, d=512, τ=8, fp16 tables
TABLE3_MB = {(4, 512): 2.1, (8, 512): 16.8, (10, 510): 53.5}  # Table 3: (τ, d_in) → MB of one fp16 layer, d_out=512


def check_bucket_probability(max_tau: int = 10) -> tuple[bool, str]:
    """p(z) = Π σ(2|z_i|/t) equals the softmax over all 2^τ buckets (float64, τ = 1 … max_tau)."""
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for tau in range(1, max_tau + 1):
        for t in (0.5, 1.0, 2.0):
            z = torch.randn(64, tau, generator=g, dtype=torch.float64)
            worst = max(worst, float((bucket_probability(z, t) - bucket_probability_bruteforce(z, t)).abs().max()))
    return worst < 1e-12, f"max |closed form - softmax| = {worst:.1e} over tau=1..{max_tau}"


def check_product_topk(n: int = 64, k: int = 8, queries: int = 256) -> tuple[bool, str]:
    """Two half top-k's give exactly the brute-force top-k over all n² product keys."""
    g = torch.Generator().manual_seed(0)
    s1, s2 = torch.randn(queries, n, generator=g, dtype=torch.float64), torch.randn(queries, n, generator=g, dtype=torch.float64)
    _, fast = product_topk(s1, s2, k)
    _, brute = bruteforce_topk(s1, s2, k)
    same = bool((fast.sort(-1).values == brute.sort(-1).values).all())
    return same, f"{queries} queries, n²={n * n} keys, top-{k}: identical index sets"


def check_hash_memory_equation() -> tuple[bool, str]:
    """HashMemory(x) equals Σ_k p(z_k) · T_k[h(z_k)] written out with a loop over tables."""
    torch.manual_seed(0)
    layer = HashMemory(48, 16, tau=6).double()
    x = torch.randn(5, 48, dtype=torch.float64)
    with torch.no_grad():
        codes, p = layer.codes(x), layer.bucket_weights(x)
        tables = layer.tables.view(layer.K, 2**layer.tau, -1)
        manual = sum(p[:, k, None] * tables[k][codes[:, k]] for k in range(layer.K))
        err = float((layer(x) - manual).abs().max())
    return err < 1e-12, f"max error {err:.1e}"


def check_hash_read_backends() -> tuple[bool, str]:
    """hash_read equals embedding_bag(tables, *address(x)) on every backend that runs here (fp32, forward)."""
    from ..reading.hash_bag import hash_read
    from ..reading.kernels import cpu

    torch.manual_seed(0)
    layer = HashMemory(48, 20, tau=6, bias=True)
    x = torch.randn(7, 48)
    backends = ["torch"] + (["c"] if cpu.available() else [])
    if kernels.triton_available() and (torch.cuda.is_available() or kernels.interpreter_enabled()):
        backends.append("triton")
        if torch.cuda.is_available():
            layer, x = layer.cuda(), x.cuda()
    with torch.no_grad():
        want = layer.read(*layer.address(x))
        errs = {b: float((hash_read(x, layer.tables, tau=6, bias=layer.bias, backend=b) - want).abs().max())
                for b in backends}
    return max(errs.values()) < 1e-5, ", ".join(f"{b}: {e:.1e}" for b, e in errs.items())


def check_triton_matches_torch() -> tuple[bool | None, str]:
    """memlab's Triton embedding_bag equals F.embedding_bag (forward and both gradients). None = cannot run here."""
    if not kernels.triton_available():
        return None, "skipped: triton is not installed"
    if not torch.cuda.is_available() and not kernels.interpreter_enabled():
        return None, "skipped: no CUDA device and TRITON_INTERPRET is not set"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(0)
    table = torch.randn(40, 37, generator=g).to(device).requires_grad_()
    idx = torch.randint(0, 40, (9, 6), generator=g).to(device)
    w = torch.rand(9, 6, generator=g).to(device).requires_grad_()
    worst = 0.0
    outs = {}
    for backend in ("torch", "triton"):
        out = embedding_bag(table, idx, w, backend=backend)
        grads = torch.autograd.grad(out, (table, w), torch.ones_like(out))
        outs[backend] = (out, *grads)
    for a, b in zip(outs["torch"], outs["triton"]):
        worst = max(worst, float((a - b).detach().abs().max()))
    where = "CUDA" if device == "cuda" else "CPU, Triton interpreter"
    return worst < 1e-4, f"max |triton - torch| = {worst:.1e} (output, d table, d weights; {where})"


def check_table5() -> tuple[bool, str]:
    """MemoryBlock.memory_bytes(fp16) reproduces Table 5: 33.6 / 52.4 / 88.1 / 157.3 MB for e = 0..3."""
    got = {e: round(MemoryBlock(512, tau=8, expand_bits=e).memory_bytes(torch.float16) / 1e6, 1) for e in TABLE5_MB}
    return got == TABLE5_MB, "MB for e=0..3: " + " / ".join(f"{v}" for v in got.values())


def check_table3() -> tuple[bool, str]:
    """HashMemory.memory_bytes(fp16) reproduces Table 3's memory column: 2.1 / 16.8 / 53.5 MB."""
    got = {key: round(HashMemory(key[1], 512, tau=key[0]).memory_bytes(torch.float16) / 1e6, 1) for key in TABLE3_MB}
    return got == TABLE3_MB, "MB for tau=4/8/10: " + " / ".join(f"{v}" for v in got.values())


def check_table1() -> tuple[bool, str]:
    """memlab.flops reproduces Table 1's FLOPs columns; the one row where the paper's print disagrees with its own
    formula (MemoryFormer-small) is reported, not hidden."""
    rows = flops.table1()
    off = [r for r in rows if not r["matches_print"]]
    expected_off = ["MemoryFormer-small"]
    detail = f"{len(rows) - len(off)}/{len(rows)} rows match the print"
    for r in off:
        detail += (f"; {r['model']}: formula {r['without_attention_g']:.2f}G/{r['total_g']:.2f}G, "
                   f"printed {r['printed_without_attention_g']}G/{r['printed_total_g']}G")
    return [r["model"] for r in off] == expected_off, detail


CHECKS: dict[str, Callable[[], tuple[bool | None, str]]] = {
    "p(z) closed form = softmax over 2^tau buckets": check_bucket_probability,
    "product top-k = brute-force top-k over n^2 keys": check_product_topk,
    "HashMemory = sum_k p(z_k) T_k[h(z_k)]": check_hash_memory_equation,
    "hash_read = embedding_bag(tables, *address(x)), every backend": check_hash_read_backends,
    "Triton embedding_bag = F.embedding_bag": check_triton_matches_torch,
    "MemoryBlock memory = Table 5": check_table5,
    "HashMemory memory = Table 3": check_table3,
    "memlab.flops = Table 1": check_table1,
}


def run_checks() -> list[tuple[str, bool | None, str]]:
    """Run every check: (name, passed or None when skipped, detail)."""
    return [(name, *check()) for name, check in CHECKS.items()]
