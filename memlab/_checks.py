"""Input checks shared by memlab's modules: one clear error that says what was wrong and how to fix it."""
from __future__ import annotations

import difflib

import torch

#: Default ceiling for a single table/value parameter; a layer whose estimate exceeds it refuses to build.
DEFAULT_MAX_MEMORY_BYTES = 8e9


def check_float_input(x: torch.Tensor, features: int | None, who: str) -> None:
    """Raise TypeError/ValueError unless ``x`` is a floating tensor whose last dimension is ``features`` (any, if None)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who} expects a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{who} expects a floating-point input, got dtype={x.dtype}; "
            f"convert it first, e.g. x.float() (token ids go through an nn.Embedding before a memory layer)"
        )
    if x.dim() == 0 or (features is not None and x.shape[-1] != features):
        got = "a scalar" if x.dim() == 0 else f"shape {tuple(x.shape)}"
        raise ValueError(f"{who} expects input of shape (..., {features if features is not None else 'd'}), got {got}")


def check_memory(nbytes: float, what: str, max_bytes: float | None, fix: str) -> None:
    """Refuse to allocate a table whose size estimate exceeds ``max_bytes`` (None disables the check)."""
    if max_bytes is not None and nbytes > max_bytes:
        raise ValueError(
            f"{what} would take {nbytes / 1e9:.2f} GB, above the limit of {max_bytes / 1e9:.2f} GB; "
            f"{fix}, or pass max_memory_bytes=None to build it anyway"
        )


def check_positive_int(value, name: str) -> None:
    """Raise ValueError unless ``value`` is an int ≥ 1 (a bool is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_index_range(indices: torch.Tensor, rows: int) -> None:
    """Raise ValueError unless every entry of ``indices`` lies in [0, rows). Reads the values: a device sync on CUDA."""
    if indices.numel():
        lo, hi = (int(v) for v in torch.aminmax(indices))
        if lo < 0 or hi >= rows:
            raise ValueError(
                f"indices must lie in [0, {rows}) for a table of {rows} rows, got values in [{lo}, {hi}]"
            )


def did_you_mean(key: str, names) -> str:
    """`` (did you mean 'd_model'?)`` for the closest of ``names`` to a mistyped ``key``, or ``""``."""
    close = difflib.get_close_matches(key, sorted(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_known_keys(names, values: dict, what: str) -> None:
    """Reject keys of ``values`` that are not in ``names``, suggesting the closest name (``d_modl`` → ``d_model``)."""
    names = list(names)
    unknown = [k for k in values if k not in names]
    if unknown:
        hints = ", ".join(f"{key!r}{did_you_mean(key, names)}" for key in unknown)
        raise ValueError(f"unknown {what} config key(s): {hints}; valid keys: {', '.join(names)}")
