"""Decode rooflines: bytes and FLOPs per decode step of each layer kind, the time they allow on a machine, and a
measurement of the same step on a stack of layers larger than the last-level cache (notebook 09, kernels/bench.py).

A decode step at batch B runs every layer once on B new tokens. Its time is bounded below by

    max( bytes read / memory bandwidth ,  FLOPs / peak FLOP/s )                      (the roofline)

and the bytes are what separates the layers (MemoryFormer §3 counts FLOPs only):

    nn.Linear(d_in, d_out)   all d_in·d_out weights, once, whatever B
    dense FFN                2·d·h weights
    MoE FFN (E experts, k)   the router, and every expert some token of the batch picks: E·(1 − (1 − k/E)^B) experts
    HashMemory (K, τ, d)     the distinct rows the B tokens hash to: K·2^τ·(1 − (1 − 2^-τ)^B) rows of d
                             (B·K rows while B ≪ 2^τ: fewer bytes than a dense layer's d_in·d_out only while
                             B·K·d < d_in·d, i.e. B < d_in/K = τ)
    product keys (PKM)       W_q, all 2·H·n half-keys, and the distinct values read: N·(1 − (1 − H·k/N)^B) rows
    Memory+                  PKM plus the gate projections W1 and W2

``expected_distinct`` assumes uniform independent addresses (random tokens); trained layers reuse rows more
(notebook 08), which only lowers the hash and value terms.

Every byte is counted once (an ideal kernel); activations (B·d per layer) are counted too. ``step_bytes`` reads the
sizes from the modules themselves, so the model follows whatever layer is passed in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..layers.hash_memory import HashMemory
from ..layers.memory_block import MemoryBlock
from ..layers.memory_plus import MemoryPlus
from ..layers.product_key_memory import ProductKeyMemory
from ..layers.shared_values import SharedValues
from .models.moe import MoEFFN
from .timing import time_side_by_side


# ---------------------------------------------------------------------------------------------------------- machines
@dataclass(frozen=True)
class Machine:
    """What bounds a decode step: memory bandwidth (bytes/s, read + write counted once each) and FLOP/s."""

    name: str
    bandwidth: float
    flops: float
    bytes_per_value: int  # 4 for fp32 weights (the CPU runs), 2 for bf16 (how an H100 serves a model)
    source: str


#: NVIDIA H100 SXM5 datasheet: 3.35 TB/s HBM3; dense BF16 Tensor Core 989 TFLOPS (the sheet's 1,979 is with 2:4
#: sparsity). Weights in bf16.
H100 = Machine("NVIDIA H100 SXM5", 3.35e12, 989e12, 2, "NVIDIA H100 datasheet: HBM3 3.35 TB/s, BF16 989 TFLOPS dense")


def copy_bandwidth(megabytes: int = 256, rounds: int = 5) -> float:
    """Bytes/s of a large fp32 tensor copy (read + write counted): the practical DRAM bandwidth of this machine."""
    n = megabytes * 2**20 // 4
    src = torch.randn(n)
    dst = torch.empty_like(src)
    t = time_side_by_side({"copy": lambda: dst.copy_(src)}, rounds=rounds, min_time_per_round=0.05)["copy"]
    return 2 * n * 4 / t


def matmul_flops(size: int = 1024, rounds: int = 5) -> float:
    """FLOP/s (2 per multiply-add) of an fp32 square matrix product: the practical compute peak of this machine."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    t = time_side_by_side({"mm": lambda: a @ b}, rounds=rounds, min_time_per_round=0.05)["mm"]
    return 2 * size**3 / t


def measure_cpu(quick: bool = False) -> Machine:
    """This machine as a ``Machine``: measured copy bandwidth and matmul FLOP/s, fp32."""
    bw = copy_bandwidth(64 if quick else 256, rounds=3 if quick else 5)
    fl = matmul_flops(512 if quick else 1024, rounds=3 if quick else 5)
    return Machine("this CPU (measured)", bw, fl, 4, "torch copy_ of a large tensor; fp32 matmul")


# ---------------------------------------------------------------------------------------------------------- bytes
def expected_distinct(items: int, draws: int, batch: int) -> float:
    """Expected distinct items hit when each of ``batch`` tokens picks ``draws`` of ``items`` uniformly (a token's own
    picks distinct, tokens independent): items · (1 − (1 − draws/items)^batch)."""
    if items <= 0 or draws <= 0 or batch <= 0:
        return 0.0
    return items * (1.0 - (1.0 - min(draws, items) / items) ** batch)


def step_bytes(module: nn.Module, batch: int, bytes_per_value: int | None = None) -> dict[str, float]:
    """Bytes one decode step at ``batch`` tokens reads and writes, by part: {part: bytes}. Parts: weights a dense
    layer reads whole (``weights``), the query projection, half-keys, gate projections, router, and the rows or experts
    the batch picks (``rows`` / ``experts``), plus ``activations`` (inputs read, outputs written)."""
    e = bytes_per_value or next(module.parameters()).element_size()
    B = batch
    if isinstance(module, MemoryPlus):
        parts = step_bytes(module.memory, batch, e)
        d, v = module.d_model, module.memory.v_dim
        parts["gate projections"] = 2 * d * v * e
        parts["activations"] += B * v * e
        return parts
    if isinstance(module, ProductKeyMemory):
        h, k, n, d = module.heads, module.topk, module.n_keys, module.d_model
        parts = {"query projection": d * h * module.k_dim * e, "half-keys": h * n * module.k_dim * e,
                 "rows": expected_distinct(module.n_values, h * k, B) * module.v_dim * e,
                 "activations": B * (d + module.v_dim) * e}
        if module.out_proj is not None:
            parts["output projection"] = module.v_dim * d * e
        return parts
    if isinstance(module, MemoryBlock):
        a, b = step_bytes(module.ml1, batch, e), step_bytes(module.ml2, batch, e)
        return {"rows": a["rows"] + b["rows"], "activations": a["activations"] + b["activations"]}
    if isinstance(module, HashMemory):
        rows = expected_distinct(2**module.tau, 1, B) * module.num_tables
        return {"rows": rows * module.out_features * e, "activations": B * (module.in_features + module.out_features) * e}
    if isinstance(module, MoEFFN):
        experts = expected_distinct(module.n_experts, module.topk, B)
        return {"router": module.d_model * module.n_experts * e,
                "experts": experts * 2 * module.d_model * module.hidden * e, "activations": 2 * B * module.d_model * e}
    if isinstance(module, nn.Linear):
        return {"weights": module.in_features * module.out_features * e,
                "activations": B * (module.in_features + module.out_features) * e}
    if isinstance(module, nn.Sequential):  # a dense FFN: Linear, activation, Linear
        total: dict[str, float] = {}
        for m in module:
            if isinstance(m, nn.Linear):
                for part, b in step_bytes(m, batch, e).items():
                    total[part] = total.get(part, 0.0) + b
        return total
    raise TypeError(f"step_bytes does not know {type(module).__name__}")


def step_flops(module: nn.Module, batch: int) -> float:
    """FLOPs (2 per counted multiply-add) of one decode step: batch × the module's ``flops_per_token``."""
    if hasattr(module, "flops_per_token"):
        per_token = module.flops_per_token()
    elif isinstance(module, nn.Linear):
        per_token = module.in_features * module.out_features
    elif isinstance(module, nn.Sequential):
        per_token = sum(m.in_features * m.out_features for m in module if isinstance(m, nn.Linear))
    else:
        raise TypeError(f"step_flops does not know {type(module).__name__}")
    return 2.0 * batch * per_token


def modelled_seconds(module: nn.Module, batch: int, machine: Machine) -> float:
    """The roofline's lower bound on one decode step of ``module`` at ``batch`` tokens on ``machine``."""
    nbytes = sum(step_bytes(module, batch, machine.bytes_per_value).values())
    return max(nbytes / machine.bandwidth, step_flops(module, batch) / machine.flops)


def crossover_batch(tau: int) -> float:
    """The batch below which a MemoryFormer layer HashMemory(d, d, τ) reads fewer bytes than nn.Linear(d, d): B·K·d
    row bytes against d² weight bytes, K = d/τ, so B < τ (while rows do not repeat; with repeats, slightly above)."""
    return float(tau)


def first_crossing(ratios: dict[int, float]) -> float | None:
    """The batch where a ratio (e.g. memory layer time / dense layer time, by batch) first reaches 1, interpolated
    log-linearly between the batches given; None if it stays below 1 (or starts at or above it)."""
    pts = sorted(ratios.items())
    for (b0, r0), (b1, r1) in zip(pts, pts[1:]):
        if r0 < 1 <= r1:
            f = -math.log(r0) / (math.log(r1) - math.log(r0))
            return math.exp(math.log(b0) + f * (math.log(b1) - math.log(b0)))
    return None


def hash_to_dense_bytes(tau: int, batch: int, d: int = 1024) -> float:
    """Row bytes of HashMemory(d, d, τ) at ``batch`` tokens over nn.Linear(d, d)'s weight bytes. Tends to 2^τ/τ at
    full table use (every row of the K·2^τ read once)."""
    k = d // tau
    return expected_distinct(2**tau, 1, batch) * k * d / (d * d)


def pkm_values_for_doubling(d: int = 1024, heads: int = 4, topk: int = 32, k_dim: int = 512, n_keys: int = 512,
                            v_dim: int | None = None) -> int:
    """How many values (n²) a PKM may hold before its batch-1 decode bytes double, other sizes fixed. The half-keys
    (heads·n·k_dim numbers) are the only part that grows with the memory; the values read per token (heads·topk
    rows) do not. Solves bytes(n') = 2·bytes(n) for n' (fp32 or any fixed width: it cancels)."""
    v = v_dim or d
    fixed = d * heads * k_dim + heads * topk * v + 2 * d  # W_q, values read, activations
    keys = heads * n_keys * k_dim
    n_new = (fixed + 2 * keys) / (heads * k_dim)
    return int(math.floor(n_new)) ** 2


# ---------------------------------------------------------------------------------------------------------- stacks
LAYER_KINDS = ("dense FFN", "MoE FFN", "PKM", "Memory+", "MemoryFormer layer", "Memory Block")


def build_layer(kind: str, d: int, values: SharedValues | None = None, tau: int = 8, n_keys: int = 256,
                heads: int = 4, topk: int = 32, experts: int = 8, expert_topk: int = 2) -> nn.Module:
    """One layer of ``kind`` at width d, in memlab's classes (fp32, eval mode): dense FFN d → 4d → d; MoE with
    ``experts`` experts of 4d/``expert_topk`` hidden units (active FFN = the dense one); PKM / Memory+ reading the
    shared ``values``; HashMemory(d, d, τ); MemoryBlock(d, τ, e = 2)."""
    if kind == "dense FFN":
        layer = nn.Sequential(nn.Linear(d, 4 * d, bias=False), nn.GELU(), nn.Linear(4 * d, d, bias=False))
    elif kind == "MoE FFN":
        layer = MoEFFN(d, 4 * d // expert_topk, experts, expert_topk)
    elif kind == "PKM":
        layer = ProductKeyMemory(d, n_keys=n_keys, heads=heads, topk=topk, values=values)
    elif kind == "Memory+":
        layer = MemoryPlus(d, n_keys=n_keys, heads=heads, topk=topk, values=values)
    elif kind == "MemoryFormer layer":
        layer = HashMemory(d, d, tau=tau, max_memory_bytes=None)
    elif kind == "Memory Block":
        layer = MemoryBlock(d, tau=tau, max_memory_bytes=None)
    else:
        raise ValueError(f"kind={kind!r} is not one of {LAYER_KINDS}")
    return layer.eval().requires_grad_(False)


def weight_bytes(module: nn.Module, skip: SharedValues | None = None) -> int:
    """Bytes of the module's own parameters (a shared value pool ``skip`` is not counted)."""
    return sum(p.numel() * p.element_size() for p in module.parameters() if skip is None or p is not skip.weight)


def build_stack(kind: str, d: int, min_bytes: float, values: SharedValues | None = None, max_layers: int = 64,
                **kwargs) -> list[nn.Module]:
    """Copies of one layer kind until their own weights exceed ``min_bytes`` (≥ 1 layer, ≤ ``max_layers``), so a pass
    over the stack reads every layer's weights from DRAM, as a decode step through a real model does. Product-key
    layers share ``values`` (Memory Layers at Scale shares one pool across memory layers)."""
    stack, total = [], 0
    while (total <= min_bytes or not stack) and len(stack) < max_layers:
        torch.manual_seed(len(stack))
        layer = build_layer(kind, d, values=values, **kwargs)
        stack.append(layer)
        total += weight_bytes(layer, values)
    return stack


@torch.inference_mode()
def time_decode(stacks: dict[str, list[nn.Module]], batch: int, d: int, rounds: int = 5,
                min_time_per_round: float = 0.02) -> dict[str, float]:
    """Median seconds per layer of one decode step at ``batch`` tokens: each stack is run layer by layer on a (batch, d)
    input (no residual: the time, not the function, is measured), all stacks side by side in interleaved rounds
    (``memlab.lab.timing``). Layer i reads its own weights, which the other layers have evicted from cache. Every call
    takes the next of a pool of inputs (4096/batch of them, at least 8), so the rows a memory layer reads differ from
    call to call as in decoding, instead of staying in cache for the next call."""
    pool = [torch.randn(batch, d) for _ in range(max(8, 4096 // batch))]

    def run(stack):
        state = {"i": 0}

        def call():
            x = pool[state["i"] % len(pool)]
            state["i"] += 1
            for layer in stack:
                layer(x)
        return call

    times = time_side_by_side({k: run(s) for k, s in stacks.items()}, rounds=rounds,
                              min_time_per_round=min_time_per_round, warmup=1)
    return {k: t / len(stacks[k]) for k, t in times.items()}


def last_level_cache_bytes(default: int = 32 * 2**20) -> int:
    """The largest CPU cache in bytes (Linux sysfs), else ``default``."""
    best = 0
    try:
        from pathlib import Path

        for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
            text = f.read_text().strip()
            mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1], 1)
            best = max(best, int(text.rstrip("KMG")) * mult)
    except (OSError, ValueError):
        pass
    return best or default

