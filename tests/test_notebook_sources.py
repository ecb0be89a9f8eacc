"""Every notebook's jupytext source and its committed .ipynb agree, and the .ipynb carries outputs from a run."""
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells if c.source.strip()]


def test_there_are_notebooks():
    assert SOURCES, f"no notebooks/NN_*.py found in {NOTEBOOKS}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_is_in_sync_with_py_source(source):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `make notebooks` to execute {source.name}"
    from_py = jupytext.read(source)
    committed = jupytext.read(ipynb)
    assert _cells(from_py) == _cells(committed), (
        f"{ipynb.name} differs from {source.name}: re-execute with "
        f"`.venv/bin/jupytext --set-kernel python3 --to ipynb --execute {source.relative_to(NOTEBOOKS.parent)}`"
    )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_is_executed(source):
    nb = jupytext.read(source.with_suffix(".ipynb"))
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert code and all(c.get("execution_count") for c in code), (
        f"{source.with_suffix('.ipynb').name} has unexecuted code cells; commit it executed (make notebooks)"
    )
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{source.stem} was committed with an error output: {errors[0].get('ename')}"
