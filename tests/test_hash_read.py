"""memlab.hash_read: the fused MemoryFormer primitive equals embedding_bag(tables, *address(x)) on every backend, uses
one derivative convention at z = 0, rejects bad input with one clear error, and builds its C kernel from the source
file shipped with the package (reporting a failed build once, in one line)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import memlab  # noqa: E402
from memlab import hashing  # noqa: E402
from memlab.reading.kernels import cpu, triton_available  # noqa: E402

BACKENDS = ["torch"] + (["c"] if cpu.available() else []) + (["triton"] if triton_available() else [])


def _unfused(x, tables, tau, temperature, weighting, bias):
    """The definition: addressing by the equations, then one weighted EmbeddingBag."""
    z = x.unflatten(-1, (x.shape[-1] // tau, tau))
    rows = hashing.sign_codes(z) + torch.arange(z.shape[-2]) * 2**tau
    w = hashing.l1_bucket_weight(z, temperature) if weighting == "l1" else hashing.bucket_probability(z, temperature)
    y = memlab.embedding_bag(tables, rows, w.to(tables.dtype))
    return y if bias is None else y + bias


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weighting", ["paper", "l1"])
@pytest.mark.parametrize("shape,tau,d_out", [((1, 12), 3, 5), ((2, 7, 20), 5, 33), ((37, 16), 8, 9)])
def test_every_backend_equals_embedding_bag_of_address(backend, weighting, shape, tau, d_out):
    torch.manual_seed(0)
    d_in = shape[-1]
    tables = torch.randn((d_in // tau) << tau, d_out, requires_grad=True)
    bias = torch.randn(d_out, requires_grad=True)
    x = torch.randn(shape, requires_grad=True)
    y = memlab.hash_read(x, tables, tau=tau, temperature=0.8, weighting=weighting, bias=bias, backend=backend)
    want = _unfused(x, tables, tau, 0.8, weighting, bias)
    assert y.shape == (*shape[:-1], d_out) and y.dtype == tables.dtype
    torch.testing.assert_close(y, want, atol=2e-6, rtol=1e-5)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, tables, bias), g)
    ref = torch.autograd.grad(want, (x, tables, bias), g)
    for name, a, b in zip(("dx", "dtables", "dbias"), got, ref):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=lambda m, name=name: f"{backend} {name}: {m}")


def test_bucket_probability_grad_is_the_derivative_of_p():
    """The closed forms beside p: equal to autograd away from 0 (fp64), for both weightings."""
    torch.manual_seed(1)
    z = torch.randn(50, 6, dtype=torch.float64, requires_grad=True)
    for fn, grad_fn in ((hashing.bucket_probability, hashing.bucket_probability_grad),
                        (hashing.l1_bucket_weight, hashing.l1_bucket_weight_grad)):
        (want,) = torch.autograd.grad(fn(z, 0.7).sum(), z)
        torch.testing.assert_close(grad_fn(z.detach(), 0.7), want, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_derivative_at_zero_takes_sign_zero_as_plus(backend):
    """d|z|/dz = +1 at z = 0 on every backend: the gradient at z_i = 0 equals the one-sided limit from z_i = +ε
    (and autograd through abs, which gives 0 there, would differ)."""
    torch.manual_seed(2)
    tables = torch.randn(2 << 4, 3)
    x0 = torch.randn(1, 8)
    x0[0, 1] = 0.0
    g = torch.randn(1, 3)

    def grad_at(x):
        x = x.clone().requires_grad_()
        memlab.hash_read(x, tables, tau=4, backend=backend).backward(g)
        return x.grad[0, 1]

    eps = torch.zeros_like(x0)
    eps[0, 1] = 1e-30
    at_zero, right = grad_at(x0), grad_at(x0 + eps)
    assert at_zero != 0
    torch.testing.assert_close(at_zero, right)
    direct = hashing.bucket_probability_grad(x0[0, :4].unsqueeze(0))[0, 1]
    assert direct > 0 or direct < 0  # the equation itself gives the same one-sided value
    z = x0[0, :4].clone().requires_grad_()
    (autograd_at_zero,) = torch.autograd.grad(hashing.bucket_probability(z), z)
    assert autograd_at_zero[1] == 0  # the convention differs from autograd through torch.abs, on purpose


@pytest.mark.parametrize("call,message", [
    (lambda: memlab.hash_read(torch.randn(2, 10), torch.randn(10 << 4, 3), tau=4),
     "x.shape[-1]=10 is not divisible by tau=4; try tau in {5, 10}"),
    (lambda: memlab.hash_read(torch.randn(2, 8), torch.randn(16, 3), tau=4),
     "tables has 16 rows but x.shape[-1]=8 with tau=4 addresses K·2^tau = 2 · 16 = 32"),
    (lambda: memlab.hash_read(torch.randn(2, 8), torch.randn(32, 3), tau=4, weighting="softmax"),
     "weighting='softmax' is not one of ('paper', 'l1')"),
    (lambda: memlab.hash_read(torch.randn(2, 8), torch.randn(32, 3), tau=4, backend="cuda"),
     "backend='cuda' is not one of ('auto', 'torch', 'c', 'triton')"),
    (lambda: memlab.hash_read(torch.arange(8).view(1, 8), torch.randn(32, 3), tau=4),
     "hash_read expects a floating-point input"),
    (lambda: memlab.hash_read(torch.randn(2, 8), torch.randn(32), tau=4),
     "tables must be a 2-D tensor (K·2^tau, d_out), got (32,)"),
    (lambda: memlab.hash_read(torch.randn(2, 8).double(), torch.randn(32, 3).double(), tau=4, backend="c"),
     "backend='c' needs fp32 CPU tensors"),
])
def test_bad_input_gets_one_clear_error(call, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        call()


def test_hash_memory_forward_is_hash_read():
    torch.manual_seed(3)
    hm = memlab.HashMemory(24, 7, tau=6, weighting="l1", bias=True, temperature=0.5)
    x = torch.randn(4, 24)
    assert torch.equal(hm(x), memlab.hash_read(x, hm.tables, tau=6, temperature=0.5, weighting="l1", bias=hm.bias))


def test_c_source_ships_as_package_data():
    assert cpu.C_SOURCE_FILE.name == "hash_cpu.c" and cpu.C_SOURCE_FILE.is_file()
    assert "memlab_hash_forward" in cpu.C_SOURCE_FILE.read_text()


def test_c_cache_key_covers_source_compiler_and_flags():
    cc = cpu._compiler() or "cc"
    flags, link = cpu._flag_sets()[0]
    base = cpu.library_path("int f;", cc, flags, link)
    assert base == cpu.library_path("int f;", cc, flags, link)
    assert base != cpu.library_path("int g;", cc, flags, link)
    assert base != cpu.library_path("int f;", cc, flags + ["-O1"], link)
    assert base != cpu.library_path("int f;", "/nonexistent/other-cc", flags, link)


def test_failed_c_build_warns_once_in_one_line_and_falls_back(tmp_path):
    """A compiler that fails: one RuntimeWarning of one line naming the reason and the fallback; hash_read still
    works (torch backend)."""
    fake_cc = tmp_path / "broken-cc"
    fake_cc.write_text("#!/bin/sh\necho 'fatal error: this compiler is broken on purpose' >&2\nexit 1\n")
    fake_cc.chmod(0o755)
    script = textwrap.dedent("""
        import warnings, torch, memlab
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hm = memlab.HashMemory(8, 3, tau=4)
            y = hm(torch.randn(2, 8)); y = hm(torch.randn(2, 8))
        msgs = [str(w.message) for w in caught if "C kernel" in str(w.message)]
        print(len(msgs)); print(msgs[0] if msgs else "")
    """)
    env = dict(os.environ, CC=str(fake_cc), MEMLAB_CACHE=str(tmp_path / "cache"), PATH=os.environ.get("PATH", ""))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    count, message = out.stdout.strip().split("\n", 1)
    assert count == "1", out.stdout
    assert "\n" not in message
    assert "this compiler is broken on purpose" in message and "falls back to its torch backend" in message
