"""The backends behind ``memlab.embedding_bag`` and ``memlab.hash_read``. They take tensors, never modules.

triton_bag.py    the weighted bag in Triton: 2-D tile forward; backward by atomics or atomic-free reverse indices
triton_hash.py   MemoryFormer fused in Triton: sign codes and p(z) in registers, then the gather
torch_hash.py    hash_read in torch: the addressing equations as one autograd node (closed-form backward), then
                 ``F.embedding_bag``; its ``addressing_grad`` is the ∂L/∂x of every hash backend
cpu.py           loads hash_cpu.c, a C kernel that hashes and gathers in one call (and its backward), compiled on
                 first use and cached
teaching.py      the one-row-per-program gather that notebook 04 starts from

triton is optional: on macOS (no wheels) or without it, ``triton_available()`` is False and memlab uses its torch
backend. The kernels run on CUDA tensors, or on CPU tensors under the Triton interpreter — set ``TRITON_INTERPRET=1``
*before* the first kernel is used (Triton reads it when the kernels are decorated).
"""
from __future__ import annotations

import functools
import importlib.util
import os

import torch


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """True when the ``triton`` package can be imported."""
    try:
        if importlib.util.find_spec("triton") is None:
            return False
        import triton  # noqa: F401
    except Exception:  # a broken install counts as absent; the torch backend still works
        return False
    return True


def interpreter_enabled() -> bool:
    """True when Triton kernels run on the CPU through the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def require_triton(table: torch.Tensor) -> None:
    """Raise a clear error when the Triton backend cannot run on ``table``'s device."""
    if not triton_available():
        raise RuntimeError(
            "backend='triton' needs the triton package, which is not installed here (it has no macOS wheels); "
            "use backend='torch' or backend='auto'"
        )
    if not table.is_cuda and not interpreter_enabled():
        raise RuntimeError(
            f"backend='triton' needs a CUDA tensor, got a tensor on {table.device}; to run the kernels on the CPU "
            "set TRITON_INTERPRET=1 before importing memlab, or use backend='torch'"
        )


def embedding_bag_triton(
    table: torch.Tensor, indices2d: torch.Tensor, weights2d: torch.Tensor, backward: str | None = None
) -> torch.Tensor:
    """Differentiable weighted EmbeddingBag through memlab's Triton kernels; (bags, B) in, (bags, dim) out.

    ``backward``: "atomic" | "reverse" | None (``MEMLAB_BAG_BACKWARD`` or ``embedding_bag.DEFAULT_BACKWARD``).
    """
    from .triton_bag import TritonEmbeddingBag, resolve_backward

    return TritonEmbeddingBag.apply(table, indices2d, weights2d, resolve_backward(backward))
