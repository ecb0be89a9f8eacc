"""Input checks shared by memlab's modules: one clear error that says what was wrong and how to fix it."""
from __future__ import annotations

import torch

#: Default ceiling for a single table/value parameter; a layer whose estimate exceeds it refuses to build.
DEFAULT_MAX_MEMORY_BYTES = 8e9


def check_float_input(x: torch.Tensor, features: int, who: str) -> None:
    """Raise TypeError/ValueError unless ``x`` is a floating tensor whose last dimension is ``features``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who} expects a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{who} expects a floating-point input, got dtype={x.dtype}; "
            f"convert it first, e.g. x.float() (token ids go through an nn.Embedding before a memory layer)"
        )
    if x.dim() == 0 or x.shape[-1] != features:
        got = "a scalar" if x.dim() == 0 else f"shape {tuple(x.shape)}"
        raise ValueError(f"{who} expects input of shape (..., {features}), got {got}")


def check_memory(nbytes: float, what: str, max_bytes: float | None, fix: str) -> None:
    """Refuse to allocate a table whose size estimate exceeds ``max_bytes`` (None disables the check)."""
    if max_bytes is not None and nbytes > max_bytes:
        raise ValueError(
            f"{what} would take {nbytes / 1e9:.2f} GB, above the limit of {max_bytes / 1e9:.2f} GB; "
            f"{fix}, or pass max_memory_bytes=None to build it anyway"
        )


def check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
