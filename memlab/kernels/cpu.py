"""A small C kernel for HashMemory inference on the CPU: fused addressing + gather, compiled on first use.

Why C and not more torch ops: at 1–16 tokens a MemoryFormer layer reads only K rows per token (512 KB at d=1024,
τ=8), so its time is set by per-op overhead — each torch op costs a few µs, ``F.embedding_bag`` alone ~15 µs of
bookkeeping before it reads a byte. One C call computes the K sign codes and p(z_k) in registers and sums the rows,
with no intermediate tensors. At thousands of tokens the gather reads K·N rows (1 GB at N=2048) from a 128 MB table
that does not fit in cache; the kernel walks the output in 64-column blocks, so only a 64-column slice of the table
(8 MB) is live at a time and every table byte comes from DRAM about once.

Portability: the source is compiled with the system C compiler (``cc``; gcc or clang) into a cache directory
(``$MEMLAB_CACHE`` or ``~/.cache/memlab``) the first time it is needed (~1 s) and loaded with ctypes. No compiler, a
failed build, ``MEMLAB_CPU_KERNEL=0``, or a non-fp32 / non-contiguous input: ``available()`` is False or the caller
falls back to the pure-torch path, which computes the same numbers. Threads: large inputs are split over tokens
across ``torch.get_num_threads()`` Python threads (ctypes releases the GIL); small ones run on one thread.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

C_SOURCE = r"""
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CB 64  /* output columns per block: 256 B of every table row */

/* rows[n*K+k] = k*2^tau + h(z_k), w[n*K+k] = p(z_k) (or ||z_k||_1 p(z_k)), z = x[n, k*tau : (k+1)*tau].
   Bit i of h is [z_i >= 0] (sign(0) = +), LSB = z_0: memlab.hashing.sign_codes. p = prod_i sigmoid(scale*|z_i|). */
static void address_tokens(const float *x, int64_t n_tok, int64_t K, int64_t tau, float scale, int l1,
                           int64_t *rows, float *w, float *sig) {
    const int64_t d_in = K * tau;
    for (int64_t n = 0; n < n_tok; n++) {
        const float *xn = x + n * d_in;
        for (int64_t j = 0; j < d_in; j++) sig[j] = 1.0f / (1.0f + expf(-scale * fabsf(xn[j])));
        for (int64_t k = 0; k < K; k++) {
            int64_t code = 0;
            float p = 1.0f, a = 0.0f;
            for (int64_t i = 0; i < tau; i++) {
                float v = xn[k * tau + i];
                code |= (int64_t)(v >= 0.0f) << i;
                p *= sig[k * tau + i];
                a += fabsf(v);
            }
            rows[n * K + k] = (k << tau) + code;
            w[n * K + k] = l1 ? a * p : p;
        }
    }
}

static void gather_tokens(const float *table, const int64_t *rows, const float *w, const float *bias,
                          float *out, int64_t n_tok, int64_t K, int64_t d) {
    if (n_tok <= 16) {  /* few tokens: the output row stays in L1, stream whole table rows */
        for (int64_t n = 0; n < n_tok; n++) {
            float *o = out + n * d;
            if (bias) memcpy(o, bias, d * sizeof(float)); else memset(o, 0, d * sizeof(float));
            for (int64_t k = 0; k < K; k++) {
                const float *r = table + rows[n * K + k] * d;
                const float wk = w[n * K + k];
                for (int64_t j = 0; j < d; j++) o[j] += wk * r[j];
            }
        }
        return;
    }
    /* many tokens: 64-column blocks, so one block's slice of the table stays cached across tokens. (Measured on a
       2-core VM: slower than F.embedding_bag's prefetching row gather, so hash_forward routes many tokens there.) */
    for (int64_t c0 = 0; c0 < d; c0 += CB) {
        const int64_t width = d - c0 < CB ? d - c0 : CB;
        for (int64_t n = 0; n < n_tok; n++) {
            float acc[CB];
            for (int64_t j = 0; j < CB; j++) acc[j] = 0.0f;
            const int64_t *rn = rows + n * K;
            const float *wn = w + n * K;
            if (width == CB) {
                for (int64_t k = 0; k < K; k++) {
                    const float *r = table + rn[k] * d + c0;
                    const float wk = wn[k];
                    for (int64_t j = 0; j < CB; j++) acc[j] += wk * r[j];
                }
            } else {
                for (int64_t k = 0; k < K; k++) {
                    const float *r = table + rn[k] * d + c0;
                    const float wk = wn[k];
                    for (int64_t j = 0; j < width; j++) acc[j] += wk * r[j];
                }
            }
            float *o = out + n * d + c0;
            for (int64_t j = 0; j < width; j++) o[j] = acc[j] + (bias ? bias[c0 + j] : 0.0f);
        }
    }
}

/* Addressing only, for tokens [0, n_tok): rows (n_tok, K) int64 and w (n_tok, K) fp32. Returns 0 on success. */
int memlab_hash_address(const float *x, int64_t n_tok, int64_t K, int64_t tau, float scale, int l1,
                        int64_t *rows, float *w) {
    float *sig = (float *)malloc(sizeof(float) * (K * tau + 1));
    if (!sig) return 1;
    address_tokens(x, n_tok, K, tau, scale, l1, rows, w, sig);
    free(sig);
    return 0;
}

/* Fused HashMemory forward for tokens [0, n_tok): out (n_tok, d) = sum_k w_k table[rows_k] (+ bias).
   rows_out / w_out may be NULL; when given they receive the addresses (for a backward pass). Returns 0 on success. */
int memlab_hash_forward(const float *x, const float *table, const float *bias, float *out,
                        int64_t n_tok, int64_t K, int64_t tau, int64_t d, float scale, int l1,
                        int64_t *rows_out, float *w_out) {
    int64_t *rows = rows_out ? rows_out : (int64_t *)malloc(sizeof(int64_t) * (n_tok * K + 1));
    float *w = w_out ? w_out : (float *)malloc(sizeof(float) * (n_tok * K + 1));
    float *sig = (float *)malloc(sizeof(float) * (K * tau + 1));
    if (!rows || !w || !sig) return 1;
    address_tokens(x, n_tok, K, tau, scale, l1, rows, w, sig);
    gather_tokens(table, rows, w, bias, out, n_tok, K, d);
    if (!rows_out) free(rows);
    if (!w_out) free(w);
    free(sig);
    return 0;
}
"""

#: Set ``MEMLAB_CPU_KERNEL=0`` to force the pure-torch path (for comparisons, or if the build misbehaves).
ENV_SWITCH = "MEMLAB_CPU_KERNEL"
#: Up to this many tokens the C kernel also gathers (skipping F.embedding_bag's ~15 µs of bookkeeping); above it the
#: C kernel only addresses and F.embedding_bag (fbgemm, software-prefetched rows) gathers — faster from DRAM.
FUSED_GATHER_MAX_TOKENS = 4
_MIN_TOKENS_PER_THREAD = 256


def _cache_dir() -> Path:
    return Path(os.environ.get("MEMLAB_CACHE", Path.home() / ".cache" / "memlab"))


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc", "clang"):
        if name:
            exe = shutil.which(name.split()[0])
            if exe:
                return exe
    return None


def _flag_sets() -> list[list[str]]:
    """Compile flags, best first. -ffast-math lets gcc vectorise expf (glibc libmvec); it is used only to compile,
    never to link, so crtfastmath (which would flush denormals process-wide) is not pulled in."""
    base = ["-O3", "-fPIC", "-std=c99"]
    native = [] if (sys.platform == "darwin" or os.environ.get("MEMLAB_PORTABLE_BUILD") == "1") else ["-march=native"]
    sets = [base + ["-ffast-math"] + native, base + ["-fno-math-errno"] + native, base]
    return [list(dict.fromkeys(f)) for f in sets]


class _Lib:
    def __init__(self, lib):
        self.forward = lib.memlab_hash_forward
        self.forward.restype = ctypes.c_int
        self.forward.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 4 + [ctypes.c_float, ctypes.c_int] + [
            ctypes.c_void_p] * 2
        self.address = lib.memlab_hash_address
        self.address.restype = ctypes.c_int
        self.address.argtypes = [ctypes.c_void_p] + [ctypes.c_int64] * 3 + [ctypes.c_float, ctypes.c_int] + [
            ctypes.c_void_p] * 2


@functools.lru_cache(maxsize=None)
def _library() -> _Lib | None:
    """Compile (once per source/compiler/flags, cached on disk) and load the kernel; None when impossible."""
    if os.environ.get(ENV_SWITCH, "1") == "0" or sys.platform.startswith("win"):
        return None
    cc = _compiler()
    if cc is None:
        return None
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    for flags in _flag_sets():
        key = hashlib.sha256((C_SOURCE + cc + " ".join(flags)).encode()).hexdigest()[:16]
        path = _cache_dir() / f"memlab_hash_{key}{suffix}"
        try:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                    src, obj = Path(tmp) / "memlab_hash.c", Path(tmp) / "memlab_hash.o"
                    src.write_text(C_SOURCE)
                    lib_tmp = Path(tmp) / path.name
                    subprocess.run([cc, *flags, "-c", str(src), "-o", str(obj)], check=True, capture_output=True,
                                   timeout=120)
                    subprocess.run([cc, "-shared", str(obj), "-o", str(lib_tmp), "-lm"], check=True,
                                   capture_output=True, timeout=120)
                    os.replace(lib_tmp, path)  # atomic: concurrent builders never load a half-written file
            return _Lib(ctypes.CDLL(str(path)))
        except (OSError, AttributeError, subprocess.SubprocessError):
            continue
    return None


def available() -> bool:
    """True when the C kernel is built and loadable here (compiles it on the first call, ~1 s)."""
    return _library() is not None


def supports(x: torch.Tensor, tables: torch.Tensor) -> bool:
    """Inputs the C kernel handles: CPU fp32 tensors, contiguous tables (it reads memory directly)."""
    return (
        x.device.type == "cpu" and tables.device.type == "cpu"
        and x.dtype == torch.float32 and tables.dtype == torch.float32 and tables.is_contiguous()
    )


@functools.lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="memlab-cpu")


def _split(n: int, threads: int | None) -> list[int]:
    if threads is None:
        threads = min(torch.get_num_threads(), n // _MIN_TOKENS_PER_THREAD)
    threads = max(1, min(threads, n))
    return [n * i // threads for i in range(threads + 1)]


def _run(bounds: list[int], job) -> None:
    if len(bounds) == 2:
        codes = [job(0, bounds[1])]
    else:
        codes = list(_pool(len(bounds) - 1).map(job, bounds[:-1], bounds[1:]))
    if any(codes):
        raise MemoryError("memlab C kernel could not allocate its scratch buffers")


def hash_address(x2d: torch.Tensor, num_tables: int, tau: int, temperature: float, l1: bool,
                 threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Addressing in one C call: x2d (N, K·τ) fp32 → rows (N, K) int64 (table offsets included), weights (N, K) fp32.

    Same values as ``HashMemory.address``: rows exactly, weights up to fp32 rounding (a product of sigmoids here, the
    exp of a logsigmoid sum there). Call only when ``available()`` and ``supports(x2d, tables)``.
    """
    lib = _library()
    x2d = x2d.contiguous()
    n = x2d.shape[0]
    rows = torch.empty(n, num_tables, dtype=torch.int64)
    w = torch.empty(n, num_tables, dtype=torch.float32)
    if n:
        xs, rs, ws = x2d.data_ptr(), rows.data_ptr(), w.data_ptr()
        row_x, row_a = x2d.shape[1] * 4, num_tables * 8

        def job(a, b):
            return lib.address(xs + a * row_x, b - a, num_tables, tau, 2.0 / temperature, int(l1),
                               rs + a * row_a, ws + a * num_tables * 4)

        _run(_split(n, threads), job)
    return rows, w


def hash_forward(
    x2d: torch.Tensor, tables: torch.Tensor, bias: torch.Tensor | None, num_tables: int, tau: int,
    temperature: float, l1: bool, threads: int | None = None,
) -> torch.Tensor:
    """Fused HashMemory forward in one C call (addressing + gather + bias): x2d (N, K·τ) fp32 → (N, d) fp32.

    No autograd: for inference. Same numbers as ``HashMemory.read(*HashMemory.address(x))`` up to fp32 rounding.
    """
    lib = _library()
    x2d = x2d.contiguous()
    n, d = x2d.shape[0], tables.shape[1]
    out = torch.empty(n, d, dtype=torch.float32)
    if 0 < n <= FUSED_GATHER_MAX_TOKENS and threads is None:  # the latency path: one call, no thread pool
        bp = None if bias is None else bias.detach().contiguous().data_ptr()
        if lib.forward(x2d.data_ptr(), tables.data_ptr(), bp, out.data_ptr(), n, num_tables, tau, d,
                       2.0 / temperature, int(l1), None, None):
            raise MemoryError("memlab C kernel could not allocate its scratch buffers")
        return out
    if n:
        bias_c = bias.detach().contiguous() if bias is not None else None
        bp = bias_c.data_ptr() if bias_c is not None else None
        xs, ts, os_ = x2d.data_ptr(), tables.data_ptr(), out.data_ptr()
        row_x = x2d.shape[1] * 4

        def job(a, b):
            return lib.forward(xs + a * row_x, ts, bp, os_ + a * d * 4, b - a, num_tables, tau, d,
                               2.0 / temperature, int(l1), None, None)

        _run(_split(n, threads), job)
    return out
