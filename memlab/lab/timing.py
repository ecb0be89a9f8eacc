"""Honest timing on noisy machines: candidates measured side by side, interleaved, reported as medians and ratios.

A lone time on a shared 2-core machine means little; the ratio of two calls measured in the same rounds is stable.
"""
from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import torch


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_side_by_side(
    candidates: dict[str, Callable[[], object]],
    rounds: int = 15,
    min_time_per_round: float = 2e-3,
    warmup: int = 2,
    num_threads: int | None = None,
) -> dict[str, float]:
    """Median seconds per call of each candidate, measured in interleaved rounds.

    Each round times every candidate once, repeating a call until the round's measurement lasts at least
    ``min_time_per_round`` seconds so that timer resolution does not dominate tiny calls. The order is shuffled each
    round (seeded, so reproducible): a fixed or rotated order would make each candidate always follow the same
    predecessor and inherit its cache and thread-pool state (measured at 16 tokens: HashMemory, always timed right
    after nn.Linear, came out ~30 % slower than the same C call timed after other candidates).
    """
    names = list(candidates)
    repeats = {}
    for name, fn in candidates.items():
        for _ in range(warmup):
            fn()
        _sync()
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < min_time_per_round or n == 0:
            fn()
            n += 1
        _sync()
        repeats[name] = n
    samples: dict[str, list[float]] = {name: [] for name in names}
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        order = names[:]
        shuffle(order)
        for name in order:
            fn, n = candidates[name], repeats[name]
            _sync()
            start = time.perf_counter()
            for _ in range(n):
                fn()
            _sync()
            samples[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(s) for name, s in samples.items()}


def ratios_to(times: dict[str, float], baseline: str) -> dict[str, float]:
    """time / baseline time for every candidate (< 1 means faster than the baseline)."""
    return {name: t / times[baseline] for name, t in times.items()}
