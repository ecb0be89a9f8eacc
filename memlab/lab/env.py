"""The lab's environment: fast mode for CI and a report of what this machine offers."""
from __future__ import annotations

import os
import platform

import torch

from ..reading import kernels

FAST_ENV = "MEMLAB_FAST"


def fast_mode() -> bool:
    """True when ``MEMLAB_FAST=1``: notebooks and demos shrink their sizes (CI runs every notebook this way)."""
    return os.environ.get(FAST_ENV, "0") not in ("", "0", "false", "False")


def environment_report() -> dict[str, str]:
    """Versions and devices, for the tour notebook and benchmark result files."""
    triton_version = "not installed"
    if kernels.triton_available():
        import triton

        triton_version = triton.__version__
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()})"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "triton": triton_version,
        "device": device,
        "cpu_threads": str(torch.get_num_threads()),
        "triton_interpreter": str(kernels.interpreter_enabled()),
        "default_backend": "triton" if (torch.cuda.is_available() and kernels.triton_available()) else "torch",
        "fast_mode": str(fast_mode()),
    }
