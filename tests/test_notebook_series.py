"""The notebook series reads as one course: nbval can see every output marker, each notebook opens and closes the
same way, each has an exercise that builds something with a checker, and 00's map lists the whole series."""
from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest
from nbval.plugin import comment_markers, find_comment_markers

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def misplaced_markers(source_text: str) -> list[str]:
    """Every NBVAL_ marker nbval would not see, as 'line N: text': on a jupytext `# %%` line (it becomes the cell's
    title, not its source), in a markdown cell, not alone on a comment line, or misspelled."""
    problems = []
    nb = jupytext.reads(source_text, fmt="py:percent")
    for number, line in enumerate(source_text.splitlines(), 1):
        if line.startswith("# %%") and "NBVAL" in line:
            problems.append(f"line {number}: {line.strip()!r} is a cell title; put the marker inside the cell")
    for cell in nb.cells:
        for line in cell.source.splitlines():
            if "NBVAL" not in line:
                continue
            seen = dict(find_comment_markers(line)) if cell.cell_type == "code" else {}
            if not seen:
                problems.append(f"{cell.cell_type} cell line {line.strip()!r}: nbval does not read it (known "
                                f"markers: {', '.join(sorted(comment_markers))})")
    return problems


def test_the_marker_check_catches_a_title_marker_and_passes_a_source_marker():
    bad = "# %% NBVAL_CHECK_OUTPUT\nprint(1)\n\n# %%\nx = 1  # NBVAL_CHECK_OUTPUT\n\n# %%\n# NBVAL_CHEK_OUTPUT\nprint(2)\n"
    assert len(misplaced_markers(bad)) == 3
    assert misplaced_markers("# %%\n# NBVAL_CHECK_OUTPUT\nprint(1)\n") == []


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_every_nbval_marker_is_where_nbval_reads_it(source):
    assert misplaced_markers(source.read_text()) == []


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_each_notebook_opens_and_closes_in_the_series_format(source):
    nb = jupytext.read(source)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    head = markdown[0]
    number = source.stem[:2]
    assert head.startswith(f"# {number} · "), f"{source.name}: the first cell should start with '# {number} · Title'"
    for part in ("**What this notebook teaches.**", "**Paper sections.**", "**Before this:**"):
        assert part in head, f"{source.name}: the opening cell lacks {part}"
    titles = [line for text in markdown for line in text.splitlines() if line.startswith("## ")]
    assert "## Summary" in titles and "## Exercises" in titles, f"{source.name}: needs '## Summary' and '## Exercises'"
    assert titles.index("## Summary") < titles.index("## Exercises"), f"{source.name}: summary before exercises"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_each_notebook_has_a_build_exercise_with_a_checker_and_a_hidden_answer(source):
    text = source.read_text()
    builds = [m.start() for m in re.finditer(r"^# ### Exercise \d+ \(build\)", text, flags=re.M)]
    assert builds, f"{source.name}: no '### Exercise N (build): ...' exercise"
    for start in builds:
        after = text[start:]
        assert re.search(r"check_\w+\(", after), f"{source.name}: the build exercise never calls its checker"
        answer = after[after.index("<details>"):after.index("</details>")] if "<details>" in after else ""
        assert "```python" in answer, f"{source.name}: the build exercise has no hidden ```python answer"


def test_the_tour_maps_the_whole_series():
    tour = (NOTEBOOKS / "00_tour.py").read_text()
    missing = [p.stem[:2] for p in SOURCES if p.stem[:2] != "00" and p.stem not in tour and f"{p.stem[:2]} " not in tour]
    assert not missing, f"00_tour's map does not list notebooks {missing}"
