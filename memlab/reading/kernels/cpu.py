"""A small C kernel for HashMemory on the CPU: fused addressing + gather and its backward, compiled on first use.

Why C and not more torch ops. At 1–16 tokens a MemoryFormer layer reads only K rows per token (512 KB at d=1024,
τ=8), so its time is set by per-op overhead — each torch op costs a few µs, ``F.embedding_bag`` alone ~15 µs of
bookkeeping before it reads a byte. One C call computes the K sign codes and p(z_k) in registers and sums the rows,
with no intermediate tensors. At thousands of tokens the gather reads K·N rows (1 GB at N=2048) from a 128 MB table
that does not fit in cache; but each row is hit by ~N/2^τ tokens. The kernel walks the tables in groups of 8
(8 MB at d=1024, τ=8), all of a thread's tokens per group, so a row comes from DRAM about once and from L3
afterwards, and it sums a group's 8 rows in one loop (8 independent streams, one store per 8 rows). That loop order
is what beats ``F.embedding_bag`` (one row at a time, bag by bag) at large N; ``kernels/bench.py`` measures both.

Portability: the source is compiled with the system C compiler (``cc``; gcc or clang) into a cache directory
(``$MEMLAB_CACHE`` or ``~/.cache/memlab``) the first time it is needed (~1 s) and loaded with ctypes. No compiler, a
failed build, ``MEMLAB_CPU_KERNEL=0``, or a non-fp32 / non-contiguous input: ``available()`` is False or the caller
falls back to the pure-torch path, which computes the same numbers. Threads: OpenMP, sharing torch's pool and its
``torch.get_num_threads()``; a compiler without OpenMP (Apple clang) gives a single-threaded kernel.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

C_SOURCE_FILE = Path(__file__).with_name("hash_cpu.c")

#: Set ``MEMLAB_CPU_KERNEL=0`` to force the pure-torch path (for comparisons, or if the build misbehaves).
ENV_SWITCH = "MEMLAB_CPU_KERNEL"
#: Below this many table floats read per call (N·K·d) one thread is faster than waking the others.
MIN_PARALLEL_FLOATS = 1 << 18


def _cache_dir() -> Path:
    return Path(os.environ.get("MEMLAB_CACHE", Path.home() / ".cache" / "memlab"))


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc", "clang"):
        if name:
            exe = shutil.which(name.split()[0])
            if exe:
                return exe
    return None


def _flag_sets() -> list[tuple[list[str], list[str]]]:
    """(compile flags, link flags), best first.

    -fopenmp: the kernel's threads. torch is already loaded and ships its own libgomp.so.1; the loader reuses a loaded
    library of the same soname, so the kernel and torch share one thread pool (no second pool spinning on the cores).
    Apple clang has no -fopenmp: the next set builds a single-threaded kernel.
    -ffast-math lets gcc vectorise expf (glibc libmvec); it is used only to compile, never to link, so crtfastmath
    (which would flush denormals process-wide) is not pulled in."""
    base = ["-O3", "-fPIC", "-std=c99"]
    native = [] if (sys.platform == "darwin" or os.environ.get("MEMLAB_PORTABLE_BUILD") == "1") else ["-march=native"]
    omp = ["-fopenmp"]
    sets = [(base + ["-ffast-math"] + native + omp, omp), (base + ["-ffast-math"] + native, []),
            (base + ["-fno-math-errno"] + native, []), (base, [])]
    return [(list(dict.fromkeys(c)), link) for c, link in sets]


class _Kernels(NamedTuple):
    forward: Callable
    backward: Callable


@functools.lru_cache(maxsize=None)
def _compiler_version(cc: str) -> str:
    """First line of ``cc --version`` (part of the cache key: a compiler upgrade rebuilds the kernel)."""
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.splitlines()[0] if out else "unknown"


def library_path(source: str, cc: str, flags: list[str], link: list[str]) -> Path:
    """Where the kernel built from ``source`` with this compiler (path and version) and flags is cached."""
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    key_text = "\0".join([source, cc, _compiler_version(cc), " ".join(flags), " ".join(link)])
    return _cache_dir() / f"memlab_hash_{hashlib.sha256(key_text.encode()).hexdigest()[:16]}{suffix}"


def _build(source: str, cc: str, flags: list[str], link: list[str], path: Path) -> None:
    """Compile and link ``source`` into ``path`` atomically (concurrent builders never load a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src, obj, lib_tmp = Path(tmp) / "hash_cpu.c", Path(tmp) / "hash_cpu.o", Path(tmp) / path.name
        src.write_text(source)
        subprocess.run([cc, *flags, "-c", str(src), "-o", str(obj)], check=True, capture_output=True, text=True,
                       timeout=120)
        subprocess.run([cc, "-shared", *link, str(obj), "-o", str(lib_tmp), "-lm"], check=True, capture_output=True,
                       text=True, timeout=120)
        os.replace(lib_tmp, path)


def _failure_reason(error: Exception) -> str:
    """One line saying why a build or load failed (the compiler's first error line when there is one)."""
    if isinstance(error, subprocess.CalledProcessError):
        lines = [ln for ln in (error.stderr or "").splitlines() if "error" in ln.lower()] or ["exit status "
                                                                                              f"{error.returncode}"]
        return lines[0].strip()
    return f"{type(error).__name__}: {error}".splitlines()[0]


@functools.lru_cache(maxsize=None)
def _library() -> _Kernels | None:
    """Compile (once per source, compiler and flags; cached on disk) and load the kernel; None when impossible.

    A failure is reported once, in one line (``warnings.warn``), with its reason and the fallback. Switching the
    kernel off with ``MEMLAB_CPU_KERNEL=0``, or a platform without ctypes-loadable libraries (Windows), is silent.
    """
    if os.environ.get(ENV_SWITCH, "1") == "0" or sys.platform.startswith("win"):
        return None
    cc = _compiler()
    if cc is None:
        _warn_fallback("no C compiler found (install gcc or clang, or set CC)")
        return None
    source = C_SOURCE_FILE.read_text()
    reason = "no flag set worked"
    for flags, link in _flag_sets():
        path = library_path(source, cc, flags, link)
        try:
            if not path.exists():
                _build(source, cc, flags, link, path)
            lib = ctypes.CDLL(str(path))
            forward, backward = lib.memlab_hash_forward, lib.memlab_hash_backward
        except (OSError, AttributeError, subprocess.SubprocessError) as error:
            reason = _failure_reason(error)
            continue
        ptr, i64 = ctypes.c_void_p, ctypes.c_int64
        forward.restype = backward.restype = ctypes.c_int
        forward.argtypes = [ptr] * 4 + [i64] * 4 + [ctypes.c_float, ctypes.c_int] + [ptr] * 2 + [ctypes.c_int]
        backward.argtypes = [ptr] * 6 + [i64] * 3 + [ctypes.c_int]
        return _Kernels(forward, backward)
    _warn_fallback(f"building {C_SOURCE_FILE.name} with {cc} failed: {reason}")
    return None


def _warn_fallback(reason: str) -> None:
    warnings.warn(f"memlab: the C kernel for HashMemory is not available ({reason}); hash_read falls back to its torch "
                  f"backend (same numbers, slower at few tokens). Set {ENV_SWITCH}=0 to silence this.",
                  RuntimeWarning, stacklevel=3)


def available() -> bool:
    """True when the C kernel is built and loadable here (compiles it on the first call, ~1 s)."""
    return _library() is not None


def supports(x: torch.Tensor, tables: torch.Tensor) -> bool:
    """Inputs the C kernel handles: CPU fp32 tensors, contiguous tables (it reads memory directly)."""
    return (x.is_cpu and tables.is_cpu and x.dtype == torch.float32 and tables.dtype == torch.float32
            and tables.is_contiguous())


def _thread_count(threads: int | None, floats: int) -> int:
    """The caller's choice, else torch's thread count for calls that read at least MIN_PARALLEL_FLOATS table floats."""
    if threads is not None:
        return threads
    return torch.get_num_threads() if floats >= MIN_PARALLEL_FLOATS else 1


def hash_forward(
    x2d: torch.Tensor, tables: torch.Tensor, bias: torch.Tensor | None, num_tables: int, tau: int,
    temperature: float, l1: bool, threads: int | None = None, addresses: bool = False,
):
    """Fused HashMemory forward in one C call (addressing + gather + bias): x2d (N, K·τ) fp32 → (N, d) fp32.

    No autograd (``hash_read_c`` adds it). Same numbers as ``embedding_bag(tables, *address(x))`` up to fp32 rounding.
    ``threads``: default ``torch.get_num_threads()`` (one thread for small calls). ``addresses=True`` also returns
    the rows (N, K) int64 and weights (N, K) fp32 the kernel computed. Call only when ``available()`` and
    ``supports(x2d, tables)``.
    """
    forward = _library().forward
    x2d = x2d.contiguous()
    n, d = x2d.shape[0], tables.shape[1]
    out = torch.empty(n, d, dtype=torch.float32)
    rows = torch.empty(n, num_tables, dtype=torch.int64) if addresses else None
    w = torch.empty(n, num_tables, dtype=torch.float32) if addresses else None
    threads = _thread_count(threads, n * num_tables * d)
    if n:
        bias_c = bias.detach().contiguous() if bias is not None else None
        if forward(x2d.data_ptr(), tables.data_ptr(), None if bias_c is None else bias_c.data_ptr(), out.data_ptr(),
                   n, num_tables, tau, d, 2.0 / temperature, int(l1),
                   None if rows is None else rows.data_ptr(), None if w is None else w.data_ptr(), threads):
            raise MemoryError(f"memlab C kernel could not allocate scratch buffers for {n} tokens; pass fewer tokens")
    return (out, rows, w) if addresses else out


def gather_backward(grad_out: torch.Tensor, tables: torch.Tensor, rows: torch.Tensor, w: torch.Tensor,
                    table_grad: bool, weight_grad: bool, threads: int | None = None):
    """Backward of ``out = Σ_k w[:, k] · tables[rows[:, k]]`` in one C call: (grad_tables or None, grad_w or None).

    grad_tables is dense (rows, d) like ``F.embedding_bag``'s; grad_w[n, k] = ⟨grad_out[n], tables[rows[n, k]]⟩.
    fp32 CPU tensors as ``hash_forward(..., addresses=True)`` returns them; deterministic for a given thread count.
    """
    g = grad_out.contiguous()
    n, d = g.shape
    num_tables = rows.shape[1]
    grad_tables = torch.zeros_like(tables) if table_grad else None
    grad_w = torch.empty(n, num_tables, dtype=torch.float32) if weight_grad else None
    threads = _thread_count(threads, n * num_tables * d)
    if n and (table_grad or weight_grad):
        if _library().backward(g.data_ptr(), tables.data_ptr(), rows.data_ptr(), w.data_ptr(),
                               None if grad_tables is None else grad_tables.data_ptr(),
                               None if grad_w is None else grad_w.data_ptr(), n, num_tables, d, threads):
            raise MemoryError(f"memlab C kernel could not allocate scratch buffers for {n} tokens; pass fewer tokens")
    elif weight_grad:
        grad_w.zero_()
    return grad_tables, grad_w


class HashReadC(torch.autograd.Function):
    """hash_read on the C kernel, with gradients: forward = ``hash_forward`` (keeping the addresses), backward =
    ``gather_backward`` (table gradient and ∂L/∂w in one pass) + ``torch_hash.addressing_grad`` for x + Σ for the
    bias. fp32 CPU only (``supports``); not twice differentiable."""

    @staticmethod
    def forward(ctx, x2d, tables, bias, num_tables, tau, temperature, l1):
        out, rows, w = hash_forward(x2d, tables, bias, num_tables, tau, temperature, l1, addresses=True)
        ctx.save_for_backward(x2d, tables, rows, w)
        ctx.shape = (num_tables, tau, temperature, l1)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        from .torch_hash import addressing_grad

        x2d, tables, rows, w = ctx.saved_tensors
        need_x, need_tables, need_bias = ctx.needs_input_grad[:3]
        grad_tables, grad_w = gather_backward(grad_out, tables, rows, w, need_tables, need_x)
        grad_x = addressing_grad(x2d, grad_w, *ctx.shape) if need_x else None
        grad_bias = grad_out.sum(0) if need_bias else None
        return grad_x, grad_tables, grad_bias, None, None, None, None


def hash_read_c(x2d: torch.Tensor, tables: torch.Tensor, bias: torch.Tensor | None, num_tables: int, tau: int,
                temperature: float, l1: bool) -> torch.Tensor:
    """``hash_read``'s C backend: x2d (N, K·τ) fp32 → (N, d_out) fp32. One C call without a gradient; with one,
    ``HashReadC`` keeps the addresses for its backward. Call only when ``available()`` and ``supports(x2d, tables)``."""
    if torch.is_grad_enabled() and (x2d.requires_grad or tables.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return HashReadC.apply(x2d, tables, bias, num_tables, tau, temperature, l1)
    return hash_forward(x2d, tables, bias, num_tables, tau, temperature, l1)
