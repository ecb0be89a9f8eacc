"""Rows of results as text: the one table formatter every memlab command and notebook prints with, and CSV.

    format_table   a list of dicts as a fixed-width text table (deterministic: notebooks check its output)
    csv_text       the same rows as CSV text, for the files a run writes next to its results.json

A small hand formatter, not pandas: its output is deterministic text that notebooks check. A notebook that wants a
DataFrame gets one from the same rows with ``pandas.DataFrame(rows)`` (sweep results come as DataFrames).
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence

#: What a cell shows when its row has no value for the column.
MISSING = "—"


def format_cell(value, spec: str) -> str:
    """One cell: ``format(value, spec)``; ``str(value)`` for text, bools, None, or when ``spec`` is empty."""
    if not spec or value is None or isinstance(value, (bool, str)):
        return str(value)
    return format(value, spec)


def format_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None, floatfmt: str = ".3g",
                 formats: Mapping[str, str] | None = None, left_aligned: Iterable[str] = ()) -> str:
    """``rows`` as a fixed-width text table: a header, a rule, then one line per row.

    columns        the keys to show, in order (default: the first row's keys)
    floatfmt       format spec of float cells
    formats        {column: format spec} where a column needs its own, e.g. {"params": ",", "recall": ".1%"}
    left_aligned   columns aligned left (names); the others are aligned right (numbers)

    A row that lacks a column shows ``MISSING`` there.
    """
    if not rows:
        return ""
    columns = list(columns if columns is not None else rows[0].keys())
    formats = formats or {}
    left_aligned = set(left_aligned)

    def cell(row: Mapping, column: str) -> str:
        if column not in row:
            return MISSING
        value = row[column]
        return format_cell(value, formats.get(column) or (floatfmt if isinstance(value, float) else ""))

    cells = [[cell(row, c) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]

    def line(texts: Sequence[str]) -> str:
        return "  ".join(t.ljust(w) if c in left_aligned else t.rjust(w) for t, w, c in zip(texts, widths, columns))

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(texts) for texts in cells)])


def csv_text(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """``rows`` as CSV text. Columns default to every key in order of first appearance; other keys are left out."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    if not columns:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
