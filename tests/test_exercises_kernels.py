"""memlab.exercises.kernels: notebook 04's build exercise (the one-row Triton kernel) and its checker.

The hidden answer defines a ``@triton.jit`` kernel. Compiling a kernel for a GPU needs its source text
(``inspect.getsource``), which code run by ``exec`` does not have. So instead of ``notebook_answers.load_answer`` (which
execs), ``_import_answer`` writes the answer's code to a temporary .py file and imports it as a module. That works on a
GPU and under the interpreter (``TRITON_INTERPRET=1``, set by conftest.py before Triton is imported when there is no
GPU). The wrong kernels below are module-level for the same reason.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from notebook_answers import answer_code  # noqa: E402

import memlab.exercises as exercises  # noqa: E402
from memlab.reading.kernels import triton_available  # noqa: E402

pytestmark = pytest.mark.skipif(not triton_available(), reason="triton not installed: no Triton kernels to check")

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _ignores_weights_kernel(table_ptr, idx_ptr, w_ptr, out_ptr, bag_size, dim, BLOCK_D: tl.constexpr):
        bag = tl.program_id(0).to(tl.int64)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < dim
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for j in range(0, bag_size):
            row = tl.load(idx_ptr + bag * bag_size + j).to(tl.int64)
            acc += tl.load(table_ptr + row * dim + offs_d, mask=mask_d, other=0.0).to(tl.float32)  # no w
        tl.store(out_ptr + bag * dim + offs_d, acc.to(out_ptr.dtype.element_ty), mask=mask_d)

    @triton.jit
    def _first_tile_only_kernel(table_ptr, idx_ptr, w_ptr, out_ptr, bag_size, dim, BLOCK_D: tl.constexpr):
        bag = tl.program_id(0).to(tl.int64)
        offs_d = tl.arange(0, BLOCK_D)  # forgets program_id(1) * BLOCK_D: every tile writes columns 0..BLOCK_D-1
        mask_d = offs_d < dim
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for j in range(0, bag_size):
            row = tl.load(idx_ptr + bag * bag_size + j).to(tl.int64)
            w = tl.load(w_ptr + bag * bag_size + j).to(tl.float32)
            acc += w * tl.load(table_ptr + row * dim + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        tl.store(out_ptr + bag * dim + offs_d, acc.to(out_ptr.dtype.element_ty), mask=mask_d)


def _launcher(kernel, block_d=32, out_dtype=None):
    def run(table, indices, weights):
        n_bags, bag_size = indices.shape
        dim = table.shape[1]
        out = torch.zeros(n_bags, dim, dtype=out_dtype or table.dtype, device=table.device)
        kernel[(n_bags, triton.cdiv(dim, block_d))](table.contiguous(), indices.contiguous(), weights.contiguous(),
                                                     out, bag_size, dim, BLOCK_D=block_d)
        return out
    return run


def _import_answer(tmp_path: Path, notebook: str, marker: str, name: str):
    """The notebook's hidden answer, imported from a real file so that ``triton.jit`` can read its source."""
    module_file = tmp_path / "one_row_answer.py"
    module_file.write_text(answer_code(notebook, marker))
    spec = importlib.util.spec_from_file_location("one_row_answer", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


@pytest.fixture(scope="module")
def answer(tmp_path_factory):
    return _import_answer(tmp_path_factory.mktemp("answer"), "04_triton_kernels", "Exercise 1 (build)",
                          "my_embedding_bag")


def test_the_notebooks_answer_passes(answer):
    verdict = exercises.check_one_row_kernel(answer).assert_passed()
    assert len(verdict.cases) == 6


def test_a_kernel_that_ignores_the_weights_is_told_so():
    verdict = exercises.check_one_row_kernel(_launcher(_ignores_weights_kernel))
    assert not verdict.passed
    assert "on fp32, dim=7" in verdict.message and "the weights are ignored" in verdict.message


def test_a_kernel_that_forgets_the_column_offset_fails_on_the_second_tile():
    verdict = exercises.check_one_row_kernel(_launcher(_first_tile_only_kernel))
    assert not verdict.passed
    assert "dim=33" in verdict.message and "columns 0–31 are right but column 32 is not" in verdict.message


def test_an_output_in_the_wrong_dtype_is_named(answer):
    # the answer's kernel, but the launcher allocates fp32 output for an fp16 table
    kernel = answer.__globals__["my_one_row_kernel"]
    verdict = exercises.check_one_row_kernel(_launcher(kernel, out_dtype=torch.float32))
    assert not verdict.passed and "fp16" in verdict.message and "the table's dtype torch.float16" in verdict.message


def test_a_python_reference_that_is_not_a_kernel_still_passes():
    # the checker judges the numbers, not how they are computed: torch's own bag passes
    def torch_bag(table, indices, weights):
        return torch.nn.functional.embedding_bag(indices, table.float(), mode="sum",
                                                 per_sample_weights=weights.float()).to(table.dtype)

    exercises.check_one_row_kernel(torch_bag).assert_passed()


def test_the_stub_is_not_written_yet():
    def my_embedding_bag(table, indices, weights):
        raise NotImplementedError

    verdict = exercises.check_one_row_kernel(my_embedding_bag)
    assert not verdict.passed and "not written yet" in verdict.message
