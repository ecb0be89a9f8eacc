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

from .torch_hash import HashAddress
from .torch_hash import addressing_grad as addressing_grad_torch

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
    backward_rows: Callable
    addressing_grad: Callable
    bag_forward: Callable
    lazy_adamw: Callable
    product_topk: Callable
    address: Callable


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
            backward_rows, addressing = lib.memlab_hash_backward_rows, lib.memlab_hash_addressing_grad
            bag_forward, lazy_adamw = lib.memlab_bag_forward, lib.memlab_lazy_adamw
            product_topk, address = lib.memlab_product_topk, lib.memlab_hash_address
        except (OSError, AttributeError, subprocess.SubprocessError) as error:
            reason = _failure_reason(error)
            continue
        ptr, i64 = ctypes.c_void_p, ctypes.c_int64
        forward.restype = backward.restype = backward_rows.restype = ctypes.c_int
        forward.argtypes = [ptr] * 4 + [i64] * 4 + [ctypes.c_float, ctypes.c_int] + [ptr] * 2 + [ctypes.c_int]
        backward.argtypes = [ptr] * 6 + [i64] * 3 + [ctypes.c_int]
        backward_rows.argtypes = [ptr] * 4 + [i64] * 4 + [ptr, ctypes.c_int, ptr, ptr, ctypes.c_int, ptr]
        addressing.restype = None
        addressing.argtypes = [ptr] * 3 + [i64] * 3 + [ctypes.c_float, ctypes.c_int, ctypes.c_int]
        bag_forward.restype = None
        bag_forward.argtypes = [ptr] * 4 + [i64] * 3 + [ctypes.c_int]
        lazy_adamw.restype = None
        lazy_adamw.argtypes = [ptr] * 5 + [i64] * 2 + [ctypes.c_double] * 7 + [ctypes.c_int]
        product_topk.restype = None
        product_topk.argtypes = [ptr] * 2 + [i64] * 6 + [ptr] * 2 + [ctypes.c_int] * 2
        address.restype = ctypes.c_int
        address.argtypes = [ptr] * 3 + [i64] * 3 + [ctypes.c_float, ctypes.c_int, ctypes.c_int]
        return _Kernels(forward, backward, backward_rows, addressing, bag_forward, lazy_adamw, product_topk, address)
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
                    table_grad: bool, weight_grad: bool, threads: int | None = None, sparse: bool = False):
    """Backward of ``out = Σ_k w[:, k] · tables[rows[:, k]]`` in one C call: (grad_tables or None, grad_w or None).

    grad_w[n, k] = ⟨grad_out[n], tables[rows[n, k]]⟩. grad_tables is dense (rows, d), as ``F.embedding_bag``'s, or with
    ``sparse=True`` a coalesced sparse COO tensor holding only the U distinct rows read (sorted, each once), as
    ``F.embedding_bag(sparse=True)`` gives after ``coalesce()``: (U, d) floats written instead of (rows, d).
    Both come from ``memlab_hash_backward_rows``: reads grouped by row (reverse indices), each gradient row written
    once, so no (rows, d) zero-fill and no read-modify-write. fp32 CPU tensors as ``hash_forward(...,
    addresses=True)`` returns them; the result does not depend on the thread count.
    """
    g = grad_out.contiguous()
    n, d = g.shape
    num_rows = tables.shape[0]
    num_tables = rows.shape[1]
    grad_w = torch.empty(n, num_tables, dtype=torch.float32) if weight_grad else None
    threads = _thread_count(threads, n * num_tables * d)
    if not table_grad:
        if weight_grad and n:
            if _library().backward(g.data_ptr(), tables.data_ptr(), rows.data_ptr(), w.data_ptr(), None,
                                   grad_w.data_ptr(), n, num_tables, d, threads):
                raise MemoryError(f"memlab C kernel could not allocate scratch buffers for {n} tokens")
        elif weight_grad:
            grad_w.zero_()
        return None, grad_w
    max_rows = min(n * num_tables, num_rows)
    row_ids = torch.empty(max_rows, dtype=torch.int64)
    values = torch.empty(num_rows if not sparse else max_rows, d, dtype=torch.float32)
    unique = ctypes.c_int64(0)
    if n and _library().backward_rows(g.data_ptr(), tables.data_ptr(), rows.data_ptr(), w.data_ptr(), n, num_tables,
                                      d, num_rows, values.data_ptr(), int(not sparse), row_ids.data_ptr(),
                                      None if grad_w is None else grad_w.data_ptr(), threads, ctypes.byref(unique)):
        raise MemoryError(f"memlab C kernel could not allocate scratch buffers for {n} tokens; pass fewer tokens")
    if not n:
        values.zero_()
        if weight_grad:
            grad_w.zero_()
    if not sparse:
        return values, grad_w
    u = unique.value
    grad_tables = torch.sparse_coo_tensor(row_ids[:u].unsqueeze(0), values[:u], (num_rows, d), is_coalesced=True,
                                          check_invariants=False)
    return grad_tables, grad_w


def addressing_grad(x2d: torch.Tensor, grad_w: torch.Tensor, num_tables: int, tau: int, temperature: float,
                    l1: bool, threads: int | None = None) -> torch.Tensor:
    """∂L/∂x (N, K·τ) from ∂L/∂w (N, K) in one C call: ``torch_hash.addressing_grad``'s closed form (the
    derivatives of ``memlab.hashing``), same numbers up to fp32 rounding, without its ~10 torch ops (which cost
    more than the whole gather at a few tokens). fp32 CPU tensors; τ ≤ 64."""
    x2d, grad_w = x2d.contiguous(), grad_w.contiguous()
    n = x2d.shape[0]
    grad_x = torch.empty_like(x2d)
    if n:
        _library().addressing_grad(x2d.data_ptr(), grad_w.data_ptr(), grad_x.data_ptr(), n, num_tables, tau,
                                   2.0 / temperature, int(l1), _thread_count(threads, n * num_tables * tau * 32))
    return grad_x


def hash_address(x2d: torch.Tensor, num_tables: int, tau: int, temperature: float, l1: bool,
                 threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MemoryFormer's addressing alone in one C call: x2d (N, K·τ) fp32 → rows (N, K) int64 into the stacked tables and
    weights (N, K) fp32, the numbers of ``torch_hash.hash_address`` up to fp32 rounding. No autograd
    (``hash_address_c`` adds it). Call only when ``available()``."""
    x2d = x2d.contiguous()
    n = x2d.shape[0]
    rows = torch.empty(n, num_tables, dtype=torch.int64)
    w = torch.empty(n, num_tables, dtype=torch.float32)
    if n and _library().address(x2d.data_ptr(), rows.data_ptr(), w.data_ptr(), n, num_tables, tau, 2.0 / temperature,
                                int(l1), _thread_count(threads, n * num_tables * tau * 32)):
        raise MemoryError(f"memlab C kernel could not allocate scratch buffers for {n} tokens; pass fewer tokens")
    return rows, w


def _input_grad(x2d: torch.Tensor, grad_w: torch.Tensor, num_tables: int, tau: int, temperature: float,
                l1: bool) -> torch.Tensor:
    """∂L/∂x from ∂L/∂w: the C closed form, or torch's for τ > 64 (the C one keeps a chunk's τ factors on the stack).
    Not differentiable itself: a double backward (``create_graph=True``) gets one clear error, never zeros."""
    if torch.is_grad_enabled() and (grad_w.requires_grad or x2d.requires_grad):
        raise RuntimeError("memlab's C addressing is not twice differentiable; for a double backward build the layer "
                           "with backend='torch'")
    if tau <= 64:
        return addressing_grad(x2d, grad_w, num_tables, tau, temperature, l1)
    return addressing_grad_torch(x2d, grad_w, num_tables, tau, temperature, l1)


def hash_address_c(x2d: torch.Tensor, num_tables: int, tau: int, temperature: float,
                   l1: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``HashMemory.address``'s C path: (rows, weights), differentiable in x when x needs a gradient (one autograd
    node, ``torch_hash.HashAddress`` with this module's forward and closed-form backward; not twice differentiable).
    Call only when ``available()`` and x2d is an fp32 CPU tensor."""
    if torch.is_grad_enabled() and x2d.requires_grad:
        return HashAddress.apply(x2d, num_tables, tau, temperature, l1, (hash_address, _input_grad))
    return hash_address(x2d, num_tables, tau, temperature, l1)


class HashReadC(torch.autograd.Function):
    """hash_read on the C kernel, with gradients: forward = ``hash_forward`` (keeping the addresses), backward =
    ``gather_backward`` (table gradient, dense or row-sparse, and ∂L/∂w in one pass) + ``addressing_grad`` (the closed
    form of ``torch_hash.addressing_grad``, in C) for x + Σ for the
    bias. fp32 CPU only (``supports``); not twice differentiable."""

    @staticmethod
    def forward(ctx, x2d, tables, bias, num_tables, tau, temperature, l1, sparse=False):
        out, rows, w = hash_forward(x2d, tables, bias, num_tables, tau, temperature, l1, addresses=True)
        ctx.save_for_backward(x2d, tables, rows, w)
        ctx.shape = (num_tables, tau, temperature, l1)
        ctx.sparse = sparse
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x2d, tables, rows, w = ctx.saved_tensors
        need_x, need_tables, need_bias = ctx.needs_input_grad[:3]
        grad_tables, grad_w = gather_backward(grad_out, tables, rows, w, need_tables, need_x, sparse=ctx.sparse)
        grad_x = _input_grad(x2d, grad_w, *ctx.shape) if need_x else None
        grad_bias = grad_out.sum(0) if need_bias else None
        return grad_x, grad_tables, grad_bias, None, None, None, None, None


def hash_read_c(x2d: torch.Tensor, tables: torch.Tensor, bias: torch.Tensor | None, num_tables: int, tau: int,
                temperature: float, l1: bool, sparse: bool = False) -> torch.Tensor:
    """``hash_read``'s C backend: x2d (N, K·τ) fp32 → (N, d_out) fp32. One C call without a gradient; with one,
    ``HashReadC`` keeps the addresses for its backward (``sparse``: a row-sparse table gradient). Call only when
    ``available()`` and ``supports(x2d, tables)``."""
    if torch.is_grad_enabled() and (x2d.requires_grad or tables.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return HashReadC.apply(x2d, tables, bias, num_tables, tau, temperature, l1, sparse)
    return hash_forward(x2d, tables, bias, num_tables, tau, temperature, l1)


def bag_forward(table: torch.Tensor, rows: torch.Tensor, w: torch.Tensor, threads: int | None = None) -> torch.Tensor:
    """out (N, d) = Σ_k w[:, k] · table[rows[:, k]] in one C call (no autograd): rows (N, B) int64, w (N, B) fp32,
    table fp32 contiguous. The read of MemoryFormer's attention, whose Q, K and V tables share one hash."""
    rows, w = rows.contiguous(), w.contiguous()
    n, d = rows.shape[0], table.shape[1]
    out = torch.empty(n, d, dtype=torch.float32)
    if n:
        _library().bag_forward(table.data_ptr(), rows.data_ptr(), w.data_ptr(), out.data_ptr(), n, rows.shape[1], d,
                               _thread_count(threads, n * rows.shape[1] * d))
    return out


class BagC(torch.autograd.Function):
    """The weighted bag on the C kernel: forward ``bag_forward``, backward ``gather_backward`` (table gradient, dense
    or row-sparse, and ∂L/∂w in one pass over the reads grouped by row). fp32 CPU; not twice differentiable."""

    @staticmethod
    def forward(ctx, table, rows, w, sparse):
        ctx.save_for_backward(table, rows, w)
        ctx.sparse = sparse
        return bag_forward(table, rows, w)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        table, rows, w = ctx.saved_tensors
        grad_table, grad_w = gather_backward(grad_out, table, rows, w, ctx.needs_input_grad[0],
                                             ctx.needs_input_grad[2], sparse=ctx.sparse)
        return grad_table, None, grad_w, None


def embedding_bag_c(table: torch.Tensor, indices2d: torch.Tensor, weights2d: torch.Tensor,
                    sparse: bool = False) -> torch.Tensor:
    """``embedding_bag``'s C backend: (bags, B) int64 indices and fp32 weights → (bags, d) fp32, differentiable in the
    table and the weights (``sparse``: a coalesced row-sparse table gradient). Call only when ``available()`` and
    ``supports_bag(table, indices2d, weights2d)``."""
    if torch.is_grad_enabled() and (table.requires_grad or weights2d.requires_grad):
        return BagC.apply(table, indices2d.contiguous(), weights2d.contiguous(), sparse)
    return bag_forward(table, indices2d, weights2d)


def supports_bag(table: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor | None) -> bool:
    """Inputs ``embedding_bag_c`` handles: fp32 contiguous CPU table, int64 CPU indices, fp32 CPU weights."""
    return (table.is_cpu and table.dtype == torch.float32 and table.is_contiguous() and indices.is_cpu
            and indices.dtype == torch.int64 and (weights is None or (weights.is_cpu and weights.dtype == torch.float32)))


def lazy_adamw_(param: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, rows: torch.Tensor,
                grad_rows: torch.Tensor, step: int, lr: float, betas: tuple[float, float], eps: float,
                weight_decay: float, threads: int | None = None) -> None:
    """Lazy AdamW in place on the ``rows`` (U,) of fp32 CPU ``param`` and its moments, ``grad_rows`` (U, d) their
    summed gradient, ``step`` the parameter's step count after this step (bias corrections 1 − β^step). AdamW's
    formula (``torch.optim.AdamW``), equal to torch's kernels up to fp32 rounding (the order of operations differs
    in the last bit), with no gather/scatter copies. Call only when ``available()``; contiguous tensors."""
    beta1, beta2 = betas
    rows, grad_rows = rows.contiguous(), grad_rows.contiguous()
    u, d = grad_rows.shape
    if u:
        _library().lazy_adamw(param.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr(), rows.data_ptr(),
                              grad_rows.data_ptr(), u, d, lr, beta1, beta2, eps, weight_decay, 1 - beta1**step,
                              (1 - beta2**step) ** 0.5, _thread_count(threads, u * d * 8))


def product_topk(scores1: torch.Tensor, scores2: torch.Tensor, k: int, softmax: bool = False,
                 threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``memlab.product_keys.product_topk`` in one C call: half scores (..., n) fp32 CPU → (top-k scores sorted
    descending, or their softmax with ``softmax=True``; indices i·n + j), both (..., k). The same exact top-k (the k
    best of each half by quickselect, then of their k² sums, pruned: a row of the sorted k × k grid stops at the
    first sum below the current k-th). No autograd: differentiable callers gather the scores of these indices.

    Inputs of shape (T, H, n) whose last dim is contiguous are read in place with their strides (a ``bmm`` output
    viewed as (H, 2, T, n) and transposed needs no copy); anything else is made contiguous first."""
    n = scores1.shape[-1]
    lead = scores1.shape[:-1]
    if not (scores1.dim() == 3 and scores1.stride() == scores2.stride() and scores1.stride(-1) == 1):
        scores1 = scores1.reshape(-1, 1, n).contiguous()
        scores2 = scores2.reshape(-1, 1, n).contiguous()
    tokens, heads = scores1.shape[0], scores1.shape[1]
    out = torch.empty(tokens * heads, k, dtype=torch.float32)
    idx = torch.empty(tokens * heads, k, dtype=torch.int64)
    if tokens * heads:
        _library().product_topk(scores1.data_ptr(), scores2.data_ptr(), tokens, heads, scores1.stride(0),
                                scores1.stride(1), n, k, out.data_ptr(), idx.data_ptr(), int(softmax),
                                _thread_count(threads, tokens * heads * n * 64))
    return out.reshape(*lead, k), idx.reshape(*lead, k)
