"""The hidden reference solutions of the notebooks' "build it" exercises, read from the notebook sources.

An answer is the first fenced ```python block inside the ``<details>`` that follows a markdown line containing the
exercise's marker (e.g. "Exercise 4 (build)"). Tests exec it and hand the function to its checker, so the solution a
student reveals is the one the test suite proves right: there is no second copy to drift.
"""
from __future__ import annotations

from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def answer_code(notebook: str, marker: str) -> str:
    """The python source of the hidden answer after ``marker`` in ``notebooks/<notebook>.py`` (percent format)."""
    lines = (NOTEBOOKS / f"{notebook}.py").read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if marker in line), None)
    assert start is not None, f"{notebook}.py has no line containing {marker!r}"
    details = next(i for i in range(start, len(lines)) if "<details>" in lines[i])
    fence = next(i for i in range(details, len(lines)) if lines[i].strip() in ("# ```python", "#```python"))
    end = next(i for i in range(fence + 1, len(lines)) if lines[i].strip() == "# ```")
    body = [line[2:] if line.startswith("# ") else line[1:] if line.startswith("#") else line
            for line in lines[fence + 1:end]]
    return "\n".join(body) + "\n"


def load_answer(notebook: str, marker: str, name: str, namespace: dict | None = None):
    """Exec the hidden answer (in ``namespace`` plus torch and memlab) and return the object called ``name``."""
    import torch

    import memlab

    scope = {"torch": torch, "memlab": memlab, **(namespace or {})}
    exec(compile(answer_code(notebook, marker), f"{notebook}:{marker}", "exec"), scope)  # noqa: S102 - our notebook
    return scope[name]
