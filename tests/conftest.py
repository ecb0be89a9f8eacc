"""Shared test setup.

* Without CUDA, ``TRITON_INTERPRET=1`` is set *before* memlab (and Triton's kernels) are imported, so the Triton
  backend runs on the CPU through the interpreter (Triton reads the variable when the kernels are decorated).
* torch runs single-threaded (``MEMLAB_TEST_THREADS`` overrides): the tensors here are tiny.
* Matplotlib uses the non-interactive Agg backend.
* ``backend`` is a fixture parametrised over memlab's concrete backends: "torch" always, "triton" when the triton
  package is installed (otherwise a skipped param that says why); ``device`` is where such a test puts its tensors (CUDA for Triton when
  there is a GPU). ``backends`` is the list of runnable ones.
"""
from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402  (importing torch does not import memlab)

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

# Tests use tiny tensors: intra-op threads only add barrier waits (softmax on a 2×8 tensor took ~10 ms instead of
# ~0.05 ms on a busy 2-core machine). MEMLAB_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("MEMLAB_TEST_THREADS", "1")))

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pytest  # noqa: E402

import memlab.reading.kernels  # noqa: E402  (after TRITON_INTERPRET is set)

TRITON_SKIP_REASON = "triton not installed (macOS or minimal env): the torch backend is used"

#: Runnable backend names on this machine.
AVAILABLE_BACKENDS = ["torch"] + (["triton"] if memlab.reading.kernels.triton_available() else [])

#: Params for ``backend``: torch, and triton or a skipped param naming why it is absent.
BACKEND_PARAMS = ["torch"] + (
    ["triton"]
    if memlab.reading.kernels.triton_available()
    else [pytest.param("triton", marks=pytest.mark.skip(reason=TRITON_SKIP_REASON))]
)


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request) -> str:
    """One concrete embedding_bag backend per test instance ("torch", "triton")."""
    return request.param


@pytest.fixture
def device(backend) -> torch.device:
    """Where a ``backend`` test puts its tensors: CUDA for Triton on a GPU machine, else the CPU (the interpreter)."""
    return torch.device("cuda" if backend == "triton" and torch.cuda.is_available() else "cpu")


@pytest.fixture
def backends() -> list[str]:
    """Every backend that can run here: ["torch"] or ["torch", "triton"]."""
    return list(AVAILABLE_BACKENDS)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same RNG state, so failures reproduce."""
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def text_file(tmp_path_factory):
    """A small text corpus for training tests: the docstrings of the standard library's argparse module."""
    from memlab.lab import data as data_lib

    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    docs = data_lib.docstrings_from_source((data_lib.stdlib_dir() / "argparse.py").read_bytes(), "argparse")
    path.write_text("\n\n".join(d for _, d in docs))
    return path
