"""Packaging: environment.yml agrees with pyproject.toml, dependency bounds, and memlab works without triton."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def requirements(pyproject) -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    return {r.name: r for r in reqs}


def conda_python(environment) -> str:
    pins = [d for d in environment["dependencies"] if isinstance(d, str) and re.match(r"python\b", d)]
    assert len(pins) == 1, f"environment.yml should pin python once, found {pins}"
    return re.sub(r"^python\s*=*\s*", "", pins[0])


def pip_section(environment) -> list[str]:
    sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml should have one pip: section"
    return sections[0]


def test_environment_python_satisfies_requires_python(pyproject, environment):
    version = conda_python(environment)
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", version), f"pin a concrete python version, got {version!r}"
    assert Version(version) in SpecifierSet(pyproject["project"]["requires-python"])
    assert "pip" in environment["dependencies"]


def test_environment_installs_this_package_with_test_extra(pyproject, environment):
    entries = pip_section(environment)
    local = [e for e in entries if re.match(r"(-e\s+)?\.(\[|$)", e)]
    assert len(local) == 1, f"the pip section should install this package (. or -e .), got {entries}"
    extras = re.search(r"\[(.*)\]", local[0])
    assert extras, f"install the package with its [test] extra, got {local[0]!r}"
    names = [x.strip() for x in extras.group(1).split(",")]
    assert "test" in names
    defined = pyproject["project"]["optional-dependencies"]
    for name in names:
        assert name in defined, f"environment.yml asks for extra [{name}], which pyproject.toml does not define"


def test_environment_does_not_duplicate_pyproject_dependencies(pyproject, environment):
    """pyproject.toml is the one source of dependencies: conda only brings python and pip."""
    extra = [d for d in environment["dependencies"] if isinstance(d, str) and not re.match(r"(python|pip)\b", d)]
    assert extra == []
    assert [e for e in pip_section(environment) if not re.match(r"(-e\s+)?\.", e)] == []


def test_torch_has_upper_bound(pyproject):
    torch_req = requirements(pyproject)["torch"]
    assert any(s.operator in ("<", "<=", "~=", "==") for s in torch_req.specifier), (
        f"torch needs an upper bound (an open range pulls a multi-GB CUDA build), got {torch_req}"
    )
    assert any(s.operator in (">=", ">", "~=", "==") for s in torch_req.specifier)
    import torch

    installed = Version(torch.__version__.split("+")[0])
    assert torch_req.specifier.contains(installed, prereleases=True), f"installed torch {installed} outside {torch_req}"


def test_triton_is_linux_only(pyproject):
    triton_req = requirements(pyproject)["triton"]
    assert triton_req.marker is not None, "triton must carry a platform marker (no macOS/Windows wheels)"
    marker = Marker(str(triton_req.marker))
    assert marker.evaluate({"sys_platform": "linux"})
    assert not marker.evaluate({"sys_platform": "darwin"})
    assert not marker.evaluate({"sys_platform": "win32"})


def test_test_extra_has_what_the_tests_use(pyproject):
    test_extra = {Requirement(r).name for r in pyproject["project"]["optional-dependencies"]["test"]}
    assert {"pytest", "pyyaml", "nbval"} <= test_extra


def test_cli_entry_point(pyproject):
    assert pyproject["project"]["scripts"]["memlab"] == "memlab.__main__:main"


def test_c_kernel_source_is_package_data(pyproject):
    """The C kernel compiles from memlab/reading/kernels/hash_cpu.c on first use: a wheel must ship the source."""
    patterns = pyproject["tool"]["setuptools"]["package-data"]["memlab.reading.kernels"]
    source = ROOT / "memlab" / "reading" / "kernels" / "hash_cpu.c"
    assert source.is_file() and any(source.match(p) for p in patterns)


BLOCKERS = {
    # an import hook that refuses triton, as `import triton` fails where it is not installed
    "meta_path": textwrap.dedent("""
        import importlib.abc, sys

        class BlockTriton(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "triton" or name.startswith("triton."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, BlockTriton())
    """),
    # Python's own way to mark a module absent: import raises ImportError, find_spec returns None
    "sys_modules_none": textwrap.dedent("""
        import sys

        sys.modules["triton"] = None
    """),
}

USE_MEMLAB = textwrap.dedent("""
    import torch
    import memlab
    import memlab.reading.kernels
    from memlab.reading.bag import resolve_backend

    layer = memlab.HashMemory(16, 8, tau=4)  # backend="auto"
    y = layer(torch.randn(3, 16))
    assert y.shape == (3, 8) and torch.isfinite(y).all()
    assert resolve_backend("auto", layer.tables) == "torch"
    pkm = memlab.MemoryPlus(8, n_keys=4, topk=2)
    assert pkm(torch.randn(2, 8)).shape == (2, 8)
    assert memlab.reading.kernels.triton_available() is False
    assert "triton" not in sys.modules or sys.modules["triton"] is None
    try:
        memlab.embedding_bag(torch.randn(4, 2), torch.zeros(1, 2, dtype=torch.long), backend="triton")
    except RuntimeError as e:
        assert "needs the triton package" in str(e), e
    else:
        raise AssertionError("backend='triton' without triton should raise")
    print("OK")
""")


@pytest.mark.parametrize("blocker", list(BLOCKERS))
def test_memlab_works_without_triton(blocker):
    """With `import triton` failing (as on macOS), memlab imports and runs on its torch backend."""
    code = BLOCKERS[blocker] + "import sys\n" + USE_MEMLAB
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")
