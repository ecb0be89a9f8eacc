"""Every user-facing error: the exception type and the message that tells the user what to do."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

import memlab
import memlab.reading.kernels
from memlab import PEER, HashMemory, MemoryBlock, MemoryPlus, ProductKeyMemory, SharedValues, stats


# --- HashMemory / MemoryBlock construction ---------------------------------------------------------------------------

def test_in_features_not_divisible_by_tau():
    with pytest.raises(ValueError, match=re.escape("in_features=500 is not divisible by tau=8; try tau in {4, 5, 10}")):
        HashMemory(500, 64, tau=8)


def test_not_divisible_and_no_tau_fits():
    with pytest.raises(ValueError, match=re.escape("in_features=17 is not divisible by tau=4; pad in_features to a multiple of tau")):
        HashMemory(17, 4, tau=4)


def test_memory_block_d_model_not_divisible():
    with pytest.raises(ValueError, match=re.escape("d_model=500 is not divisible by tau=8; try tau in {4, 5, 10}")):
        MemoryBlock(500, tau=8)


def test_hash_memory_too_large_prints_gb_estimate():
    # K = 64 tables × 2^16 rows × 1024 × 4 bytes = 17.18 GB > the 8 GB default
    with pytest.raises(ValueError, match=r"would take 17\.18 GB, above the limit of 8\.00 GB; lower tau or out_features"):
        HashMemory(1024, 1024, tau=16)


def test_hash_memory_limit_is_configurable():
    with pytest.raises(ValueError, match=r"would take 0\.03 GB, above the limit of 0\.01 GB.*max_memory_bytes=None"):
        HashMemory(512, 512, tau=8, max_memory_bytes=1e7)
    assert HashMemory(16, 4, tau=4, max_memory_bytes=None).tables.shape == (64, 4)


def test_pkm_values_too_large_prints_gb_estimate():
    # 1024² values × 64 × 4 bytes = 0.27 GB
    with pytest.raises(ValueError, match=r"values \(1048576 × 64, fp32\) would take 0\.27 GB, above the limit of 0\.10 GB"):
        ProductKeyMemory(64, n_keys=1024, max_memory_bytes=1e8)


@pytest.mark.parametrize("weighting", ["L1", "code", None])
def test_bad_weighting(weighting):
    with pytest.raises(ValueError, match=re.escape(f"weighting={weighting!r} is not one of ('paper', 'l1')")):
        HashMemory(8, 4, tau=4, weighting=weighting)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        HashMemory(8, 4, tau=4, temperature=temperature)


@pytest.mark.parametrize("kwargs,name", [
    (dict(in_features=0, out_features=4), "in_features"),
    (dict(in_features=8, out_features=-1), "out_features"),
    (dict(in_features=8, out_features=4, tau=0), "tau"),
    (dict(in_features=8.0, out_features=4), "in_features"),
    (dict(in_features=True, out_features=4), "in_features"),
])
def test_non_positive_sizes(kwargs, name):
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        HashMemory(**kwargs)


@pytest.mark.parametrize("activation", ["relu", "GELU"])
def test_bad_activation(activation):
    with pytest.raises(ValueError, match=re.escape(f"activation={activation!r} is not one of (None, 'gelu')")):
        MemoryBlock(8, tau=4, activation=activation)


@pytest.mark.parametrize("expand_bits", [-1, 1.5, True])
def test_bad_expand_bits(expand_bits):
    with pytest.raises(ValueError, match="expand_bits must be a non-negative integer"):
        MemoryBlock(8, tau=4, expand_bits=expand_bits)


# --- inputs to the layers ---------------------------------------------------------------------------------------------

LAYERS = {
    "HashMemory": lambda: HashMemory(8, 4, tau=4),
    "MemoryBlock": lambda: MemoryBlock(8, tau=4, expand_bits=0),
    "ProductKeyMemory": lambda: ProductKeyMemory(8, n_keys=4, topk=2),
    "MemoryPlus": lambda: MemoryPlus(8, n_keys=4, topk=2),
    "PEER": lambda: PEER(8, n_keys=4, heads=2, topk=2),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_wrong_last_dimension(name):
    layer = LAYERS[name]()
    # composite layers report through their first inner layer; the shape part of the message is what matters
    with pytest.raises(ValueError, match=re.escape("expects input of shape (..., 8), got shape (3, 7)")):
        layer(torch.randn(3, 7))


@pytest.mark.parametrize("name", list(LAYERS))
def test_integer_input(name):
    layer = LAYERS[name]()
    with pytest.raises(TypeError, match=r"expects a floating-point input, got dtype=torch\.int64; convert it first"):
        layer(torch.ones(2, 8, dtype=torch.long))


def test_scalar_and_non_tensor_input():
    layer = HashMemory(8, 4, tau=4)
    with pytest.raises(ValueError, match=re.escape("expects input of shape (..., 8), got a scalar")):
        layer(torch.tensor(1.0))
    with pytest.raises(TypeError, match="HashMemory expects a torch.Tensor, got list"):
        layer([0.0] * 8)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", list(LAYERS))
def test_input_dtype_is_cast_to_the_parameters(name, dtype):
    """One rule for every layer: a floating input of another dtype is cast to the parameters' dtype, and the output
    comes back in that dtype (it used to be torch's bare "expected m1 and m2 to have the same dtype" for PKM and
    Memory+, while HashMemory accepted the input)."""
    layer = LAYERS[name]()
    x = torch.randn(3, 8).to(dtype)
    y = layer(x)
    assert y.dtype == torch.float32
    if name in ("ProductKeyMemory", "MemoryPlus", "PEER"):  # the cast comes first: exactly the fp32 computation
        assert torch.equal(y, layer(x.float()))
    elif name == "HashMemory":  # addresses in the input's precision, rows and sum in fp32
        tol = 1e-6 if dtype == torch.float64 else 2e-2
        torch.testing.assert_close(y, layer(x.float()), rtol=tol, atol=tol * 0.02)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_converted_to_float64_takes_float32_input(name):
    layer = LAYERS[name]().double()
    assert layer(torch.randn(3, 8)).dtype == torch.float64


# --- product keys -----------------------------------------------------------------------------------------------------

def test_topk_larger_than_n_keys():
    with pytest.raises(ValueError, match=re.escape("topk=9 is larger than n_keys=8; choose topk <= 8 or more keys")):
        ProductKeyMemory(16, n_keys=8, topk=9)


def test_odd_k_dim():
    with pytest.raises(ValueError, match=re.escape("k_dim=7 must be even: a query is split into two halves; try k_dim=8")):
        ProductKeyMemory(16, n_keys=8, topk=2, k_dim=7)


@pytest.mark.parametrize("query_norm", ["rms", "BATCH", True])
def test_bad_query_norm(query_norm):
    with pytest.raises(ValueError, match=re.escape(f"query_norm={query_norm!r} is not one of (None, 'batch', 'layer', 'qk')")):
        ProductKeyMemory(16, n_keys=8, topk=2, query_norm=query_norm)


@pytest.mark.parametrize("shape", [(1, 16), (16,), (1, 1, 16)])
def test_batch_query_norm_on_one_token_in_training(shape):
    pkm = ProductKeyMemory(16, n_keys=8, topk=2, query_norm="batch")
    with pytest.raises(ValueError, match=re.escape(
        "query_norm='batch' needs more than one token per batch in training mode (BatchNorm normalises each query "
        "feature over the batch), got 1 token; pass at least 2 tokens, call .eval() for inference, or use "
        "query_norm='layer' or 'qk'"
    )):
        pkm(torch.randn(shape))
    assert pkm(torch.randn(2, 16)).shape == (2, 16)  # two tokens train
    assert pkm.eval()(torch.randn(shape)).shape == shape  # one token in eval mode uses the running statistics


def test_shared_values_size_mismatch():
    with pytest.raises(ValueError, match=re.escape(
        "shared values hold 49 × 16 but this layer addresses n_keys²=64 rows of v_dim=16; "
        "build SharedValues(64, 16) or set n_keys=7"
    )):
        ProductKeyMemory(16, n_keys=8, topk=2, values=SharedValues(49, 16))


def test_shared_values_dim_mismatch():
    with pytest.raises(ValueError, match=re.escape("shared values hold 64 × 12 but this layer addresses n_keys²=64 rows of v_dim=16")):
        MemoryPlus(16, n_keys=8, topk=2, v_dim=16, values=SharedValues(64, 12))


def test_values_must_be_shared_values():
    with pytest.raises(TypeError, match="values must be a memlab.SharedValues, got Parameter"):
        ProductKeyMemory(16, n_keys=2, topk=2, values=torch.nn.Parameter(torch.zeros(4, 16)))


def test_shared_values_too_large():
    with pytest.raises(ValueError, match=r"values \(1000000 × 1000, fp32\) would take 4\.00 GB, above the limit of 1\.00 GB"):
        SharedValues(1_000_000, 1000, max_memory_bytes=1e9)


# --- embedding_bag ----------------------------------------------------------------------------------------------------

TABLE = torch.randn(10, 4)


@pytest.mark.parametrize("bad,lo,hi", [(10, 0, 10), (-1, -1, 3), (99, 0, 99)])
def test_indices_out_of_range(backend, bad, lo, hi):
    idx = torch.tensor([[0, 3], [bad, 1]])
    with pytest.raises(ValueError, match=re.escape(f"indices must lie in [0, 10) for a table of 10 rows, got values in [{lo}, {hi}]")):
        memlab.embedding_bag(TABLE, idx, backend=backend)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int16, torch.uint8])
def test_wrong_index_dtype(dtype):
    with pytest.raises(TypeError, match=re.escape(f"indices must be an int32 or int64 tensor, got {dtype}; use indices.long()")):
        memlab.embedding_bag(TABLE, torch.zeros(2, 3, dtype=dtype))


def test_indices_not_a_tensor():
    with pytest.raises(TypeError, match="indices must be an int32 or int64 tensor, got list"):
        memlab.embedding_bag(TABLE, [[0, 1]])


def test_scalar_indices():
    with pytest.raises(ValueError, match=re.escape("indices must have shape (..., bag_size), got a scalar; use indices.view(1, 1)")):
        memlab.embedding_bag(TABLE, torch.tensor(3))


def test_weights_shape_mismatch():
    with pytest.raises(ValueError, match=re.escape("weights must have the shape of indices, got weights (2, 2) and indices (2, 3)")):
        memlab.embedding_bag(TABLE, torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 2))


def test_weights_not_floating():
    with pytest.raises(TypeError, match="weights must be a floating-point tensor, got torch.int64"):
        memlab.embedding_bag(TABLE, torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long))


def test_table_not_2d_or_not_float():
    with pytest.raises(ValueError, match=re.escape("table must be a 2-D tensor (rows, dim), got (10,)")):
        memlab.embedding_bag(torch.randn(10), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="table must be floating point, got dtype=torch.int64"):
        memlab.embedding_bag(torch.ones(10, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.parametrize("backend_name", ["cuda", "Triton", "pytorch"])
def test_unknown_backend(backend_name):
    with pytest.raises(ValueError, match=re.escape(f"backend={backend_name!r} is not one of ('auto', 'torch', 'triton')")):
        memlab.embedding_bag(TABLE, torch.zeros(2, 3, dtype=torch.long), backend=backend_name)


def test_unknown_backend_in_layer():
    with pytest.raises(ValueError, match=re.escape("backend='cuda' is not one of")):  # at construction or first call
        HashMemory(8, 4, tau=4, backend="cuda")(torch.randn(2, 8))


def test_bad_memlab_backend_env(monkeypatch):
    monkeypatch.setenv("MEMLAB_BACKEND", "gpu")
    with pytest.raises(ValueError, match=re.escape("MEMLAB_BACKEND='gpu' is not one of ('auto', 'torch', 'triton')")):
        memlab.embedding_bag(TABLE, torch.zeros(2, 3, dtype=torch.long))


def test_triton_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setattr(memlab.reading.kernels, "triton_available", lambda: True)
    monkeypatch.setattr(memlab.reading.kernels, "interpreter_enabled", lambda: False)
    with pytest.raises(RuntimeError, match=r"needs a CUDA tensor, got a tensor on cpu; .*set TRITON_INTERPRET=1"):
        memlab.embedding_bag(TABLE, torch.zeros(2, 3, dtype=torch.long), backend="triton")


def test_triton_not_installed(monkeypatch):
    monkeypatch.setattr(memlab.reading.kernels, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"backend='triton' needs the triton package, which is not installed here"):
        memlab.embedding_bag(TABLE, torch.zeros(2, 3, dtype=torch.long), backend="triton")


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the check is about CUDA tensors, not CPU ones")
def test_triton_on_cpu_without_interpreter_subprocess():
    """The real thing: a fresh interpreter with TRITON_INTERPRET unset."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = (
        "import torch, memlab\n"
        "try:\n"
        "    memlab.embedding_bag(torch.randn(4, 2), torch.zeros(1, 2, dtype=torch.long), backend='triton')\n"
        "except RuntimeError as e:\n"
        "    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if memlab.reading.kernels.triton_available():
        assert "ERR backend='triton' needs a CUDA tensor" in out.stdout and "TRITON_INTERPRET=1" in out.stdout
    else:
        assert "ERR backend='triton' needs the triton package" in out.stdout


# --- the layers' read, check=False, and the Triton kernels' bounds -------------------------------------------------------

def test_layer_read_rejects_weights_of_another_shape(backend):
    """Transposed weights have the right element count: they used to be read silently (a wrong output)."""
    hm = HashMemory(8, 4, tau=4, backend=backend)
    with pytest.raises(ValueError, match=re.escape("weights must have the shape of indices, got weights (4, 2) and indices (2, 4)")):
        hm.read(torch.zeros(2, 4, dtype=torch.long), torch.ones(4, 2))
    pkm = ProductKeyMemory(8, n_keys=4, heads=4, topk=2, backend=backend)
    idx, w = pkm.lookup(torch.randn(3, 8))  # (3, 4, 2) each
    with pytest.raises(ValueError, match=re.escape("weights must have the shape of indices, got weights (3, 2, 4) and indices (3, 4, 2)")):
        pkm.read(idx, w.transpose(-1, -2))
    with pytest.raises(ValueError, match=re.escape(
        "ProductKeyMemory.read expects indices and weights of shape (..., heads=4, topk=2), as lookup() returns them, "
        "got (3, 8); to read bags of another shape call memlab.embedding_bag(layer.values.weight, indices, weights)"
    )):
        pkm.read(idx.flatten(-2), w.flatten(-2))  # (3, 8) would be read as one token with 3 heads of 8
    with pytest.raises(TypeError, match="weights must be a floating-point tensor, got list"):
        pkm.read(idx, w.tolist())


def test_check_false_still_checks_shapes(backend):
    """check=False skips only the index range (the device sync); shapes, dtypes and devices are always checked."""
    with pytest.raises(ValueError, match=re.escape("weights must have the shape of indices, got weights (4, 2) and indices (2, 4)")):
        memlab.embedding_bag(TABLE, torch.zeros(2, 4, dtype=torch.long), torch.ones(4, 2), backend=backend, check=False)
    with pytest.raises(TypeError, match="indices must be an int32 or int64 tensor"):
        memlab.embedding_bag(TABLE, torch.zeros(2, 4), backend=backend, check=False)


def test_out_of_range_index_through_read_on_the_torch_backend():
    """read does not check the range up front (no device sync); torch's own check raises."""
    hm = HashMemory(8, 4, tau=4, backend="torch")
    with pytest.raises(RuntimeError, match=re.escape("takes value 32 which is not in the valid range [0, 32)")):
        hm.read(torch.tensor([[0, 32]]), torch.ones(1, 2))
    pkm = ProductKeyMemory(8, n_keys=4, heads=1, topk=2, backend="torch")
    with pytest.raises(RuntimeError, match=re.escape("takes value -1 which is not in the valid range [0, 16)")):
        pkm.read(torch.tensor([[[0, -1]]]), torch.ones(1, 1, 2))


@pytest.mark.skipif(not memlab.reading.kernels.triton_available(), reason="triton not installed")
def test_out_of_range_index_never_reaches_the_triton_kernels():
    """The kernels have no bounds checks: under the interpreter an out-of-range row segfaulted the process. Every
    public path now raises first. A subprocess, so a regression fails this test instead of killing pytest."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    code = (
        "import torch, memlab\n"
        "from memlab import HashMemory, ProductKeyMemory\n"
        "from memlab.reading.kernels import triton_bag\n"
        "far = 10_000_000\n"
        "hm = HashMemory(8, 4, tau=4, backend='triton')\n"
        "pkm = ProductKeyMemory(8, n_keys=4, heads=1, topk=2, backend='triton')\n"
        "table, idx, w = torch.randn(10, 4), torch.tensor([[0, far]]), torch.ones(1, 2)\n"
        "cases = {\n"
        "    'embedding_bag check=False': lambda: memlab.embedding_bag(table, idx, w, backend='triton', check=False),\n"
        "    'HashMemory.read': lambda: hm.read(torch.tensor([[0, far]]), w),\n"
        "    'ProductKeyMemory.read': lambda: pkm.read(torch.tensor([[[-far, 1]]]), torch.ones(1, 1, 2)),\n"
        "    'bag_forward': lambda: triton_bag.bag_forward(table, idx, w),\n"
        "    'bag_backward': lambda: triton_bag.bag_backward(table, idx, w, torch.ones(1, 4)),\n"
        "    'bag_backward_reverse': lambda: triton_bag.bag_backward_reverse(table, idx, w, torch.ones(1, 4)),\n"
        "}\n"
        "for name, call in cases.items():\n"
        "    try:\n"
        "        call()\n"
        "        print(name, 'NO ERROR')\n"
        "    except ValueError as e:\n"
        "        print(name, 'ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"the process died (returncode {out.returncode}):\n{out.stdout}\n{out.stderr}"
    lines = out.stdout.splitlines()
    assert len(lines) == 6, out.stdout
    for line in lines:
        assert " ERR indices must lie in [0, " in line and f"got values in [" in line, line
    assert "HashMemory.read ERR indices must lie in [0, 32) for a table of 32 rows, got values in [0, 10000000]" in lines
    assert "ProductKeyMemory.read ERR indices must lie in [0, 16) for a table of 16 rows, got values in [-10000000, 1]" in lines


@pytest.mark.parametrize("installed", [True, False])
def test_sparse_with_triton_reports_the_conflict_first(monkeypatch, installed):
    """On a CPU tensor without the interpreter (or without triton) the conflict used to hide behind a device error."""
    monkeypatch.setattr(memlab.reading.kernels, "triton_available", lambda: installed)
    monkeypatch.setattr(memlab.reading.kernels, "interpreter_enabled", lambda: False)
    with pytest.raises(ValueError, match=re.escape("sparse=True (a row-sparse table gradient) needs the torch backend")):
        memlab.embedding_bag(TABLE, torch.zeros(2, 3, dtype=torch.long), backend="triton", sparse=True)


# --- stats ------------------------------------------------------------------------------------------------------------

def test_stats_errors():
    with pytest.raises(ValueError, match=re.escape("indices must lie in [0, 4), got [0, 4]")):
        stats.row_counts(torch.tensor([0, 4]), 4)
    with pytest.raises(ValueError, match="usage statistics need at least one hit; the counts are all zero"):
        stats.usage_summary(torch.zeros(5))
    for share in (0.0, 1.5):
        with pytest.raises(ValueError, match=re.escape(f"share must be in (0, 1], got {share}")):
            stats.rows_for_share(torch.ones(4), share)
