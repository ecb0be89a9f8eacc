"""The repository is self-contained: a fresh clone can open everything it cites.

* No file of the repository names a path that only exists on some machine: ``../shared``, a bare ``papers.md`` (a
  file memlab does not ship — cite the paper's own section / table / figure, or ``notebooks/paper_notes.md``), or an
  absolute machine path used as a reference (``/work/…``, ``/home/<user>``, ``/Users/<user>``, ``/root/…``,
  ``/tmp/…``, ``C:\\Users\\…``, ``file://``). Notebooks (.ipynb) are scanned too, stored outputs included.
* Every relative link in a markdown file (and in a notebook's markdown cells) points at a file of the repository, and
  an ``#anchor`` into a markdown file names one of its headings.

"Files of the repository" = ``git ls-files`` (tracked) plus untracked files git does not ignore (about to be added);
the module is skipped outside a git checkout. A line that must name such a path on purpose can carry the marker
``self-contained: ok``. The scanners are plain functions, unit-tested below on strings, so the check can be seen to
fail.
"""
from __future__ import annotations

import json
import re
import subprocess
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()

#: Files never scanned for outside paths: this file (it spells the patterns) and .gitignore (names ignored paths).
SKIP_SCAN = {THIS, ".gitignore"}
ALLOW_MARKER = "self-contained: ok"

# An absolute path must *start* here: not preceded by a word character or by . / : ~ + - \ — so URLs
# (https://host/home/x), repository-relative paths (notebooks/tmp/x) and base64 blobs do not match.
_START = r"(?<![\w./:~+\\>-])"  # a path starts at a line start, a space, a quote or a bracket, not inside a path
OUTSIDE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("../shared", re.compile(r"\.\./+shared\b")),
    ("bare papers.md", re.compile(r"(?<![\w/-])papers\.md\b")),
    ("/work/", re.compile(_START + r"/work/")),
    ("/home/<user>", re.compile(_START + r"/home/[A-Za-z0-9_.-]+")),
    ("/Users/<user>", re.compile(_START + r"/Users/[A-Za-z0-9_.-]+")),
    ("/root/", re.compile(_START + r"/root/")),
    ("/tmp/", re.compile(_START + r"/tmp/")),
    ("C:\\Users\\", re.compile(r"\b[A-Za-z]:(?:\\\\|\\|/)Users(?:\\\\|\\|/)")),
    ("file://", re.compile(r"\bfile://")),
]


# ----------------------------------------------------------------------------------------------------------- scanners
def find_outside_paths(text: str) -> list[tuple[int, str, str]]:
    """(line number, pattern name, matched text) for every outside-the-repo path in ``text``."""
    hits = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if ALLOW_MARKER in line:
            continue
        for name, pattern in OUTSIDE_PATTERNS:
            hits.extend((lineno, name, m.group(0)) for m in pattern.finditer(line))
    return hits


def _notebook_strings(node, where: str = ""):
    """Yield (location, text) for every string of a parsed .ipynb, skipping binary outputs (image/*, …)."""
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, list):
        if node and all(isinstance(x, str) for x in node):  # multi-line source / text, stored as a list of lines
            yield where, "".join(node)
        else:
            for i, x in enumerate(node):
                yield from _notebook_strings(x, f"{where}[{i}]")
    elif isinstance(node, dict):
        for key, value in node.items():
            if key.startswith(("image/", "application/pdf", "video/", "audio/")):
                continue
            yield from _notebook_strings(value, f"{where}.{key}" if where else key)


def find_outside_paths_in_notebook(nb: dict) -> list[tuple[str, str, str]]:
    """(location such as ``cells[3].outputs[0].text``, pattern name, matched text) for a parsed notebook."""
    return [(where, name, match) for where, text in _notebook_strings(nb) for _, name, match in find_outside_paths(text)]


_FENCE = re.compile(r"^(?P<f>```|~~~).*?^(?P=f)[^\n]*$", re.S | re.M)
_INLINE_CODE = re.compile(r"`+[^`\n]*`+")
_INLINE_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_HTML_LINK = re.compile(r"<(?:a|img)\s[^>]*?(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.I)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def markdown_links(text: str) -> list[str]:
    """Link targets of a markdown text, outside code blocks and inline code."""
    text = _INLINE_CODE.sub("", _FENCE.sub("", text))
    return [t for rx in (_INLINE_LINK, _REF_DEF, _HTML_LINK) for t in rx.findall(text) if t]


def heading_anchors(text: str) -> set[str]:
    """GitHub-style anchors of the markdown headings in ``text`` (lower case, punctuation dropped, spaces → '-')."""
    anchors, seen = set(), {}
    for line in _FENCE.sub("", text).splitlines():
        m = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))  # a link in a heading keeps its text
        slug = "".join(c for c in unicodedata.normalize("NFC", title.lower())
                       if c.isalnum() or c in "-_ " or unicodedata.category(c) == "Mn").replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _resolve(source: str, path: str) -> str | None:
    """Repository-relative POSIX path of link ``path`` written in file ``source``; None if it leaves the repository.
    A leading '/' is the repository root (as GitHub renders it)."""
    parts: list[str] = [] if path.startswith("/") else source.split("/")[:-1]
    for part in path.split("/"):
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts)


def broken_links(source: str, text: str, files: set[str], read=None) -> list[tuple[str, str]]:
    """(target, why) for each relative link of markdown ``text`` (found in repository file ``source``) that does not
    resolve to a file or folder among ``files`` (repository-relative POSIX paths). ``read(path) -> str`` gives a
    markdown target's text so that ``#anchors`` can be checked against its headings; None skips anchor checks."""
    folders = {p.rsplit("/", i)[0] for p in files for i in range(1, p.count("/") + 1)}
    bad = []
    for target in markdown_links(text):
        if target.startswith("//") or _SCHEME.match(target):
            continue  # http:, https:, mailto:, …: not a file of this repository
        path, _, anchor = unquote(target).partition("#")
        path = path.split("?", 1)[0]
        rel = _resolve(source, path) if path else source
        if rel is None:
            bad.append((target, "points outside the repository"))
            continue
        if rel and rel not in files and rel not in folders:
            bad.append((target, f"{rel} is not a file of the repository"))
            continue
        target_text = read(rel) if anchor and read is not None and rel.endswith(".md") and rel in files else None
        if target_text is not None and anchor.lower() not in heading_anchors(target_text):
            bad.append((target, f"no heading #{anchor} in {rel}"))
    return bad


# ------------------------------------------------------------------------------------------- the repository's files
def _repo_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True, check=True, timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted({p for p in out.decode("utf-8", "surrogateescape").split("\0") if p and (ROOT / p).is_file()})


@pytest.fixture(scope="module")
def repo_files() -> list[str]:
    files = _repo_files()
    if not files:
        pytest.skip("not a git checkout (or git is unavailable): nothing to list with git ls-files")
    return files


def _read_text(rel: str) -> str | None:
    try:
        return (ROOT / rel).read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # binary files cannot cite anything


def test_no_file_names_a_path_outside_the_repo(repo_files):
    offenders = []
    for rel in repo_files:
        if rel in SKIP_SCAN or rel.endswith(".ipynb"):
            continue
        text = _read_text(rel)
        if text is not None:
            offenders += [f"{rel}:{line}: {name}: {match!r}" for line, name, match in find_outside_paths(text)]
    assert not offenders, (
        "files cite paths a fresh clone does not have; cite the paper itself (section / table / figure, arXiv id) or "
        "notebooks/paper_notes.md instead:\n" + "\n".join(offenders)
    )


def test_no_notebook_names_a_path_outside_the_repo(repo_files):
    offenders = []
    for rel in (p for p in repo_files if p.endswith(".ipynb") and p not in SKIP_SCAN):
        nb = json.loads((ROOT / rel).read_text(encoding="utf-8"))
        offenders += [f"{rel} {where}: {name}: {match!r}" for where, name, match in find_outside_paths_in_notebook(nb)]
    assert not offenders, (
        "notebooks (sources or stored outputs) name paths outside the repository; fix the jupytext .py source and "
        "re-execute (make notebooks), or keep machine paths out of printed output:\n" + "\n".join(offenders)
    )


def test_markdown_links_resolve(repo_files):
    files = set(repo_files)
    broken = []
    for rel in repo_files:
        if rel.endswith(".md"):
            texts = [_read_text(rel) or ""]
        elif rel.endswith(".ipynb"):
            nb = json.loads((ROOT / rel).read_text(encoding="utf-8"))
            texts = ["".join(c.get("source", "")) for c in nb.get("cells", []) if c.get("cell_type") == "markdown"]
        else:
            continue
        for text in texts:
            broken += [f"{rel}: ({t}) {why}" for t, why in broken_links(rel, text, files, _read_text)]
    assert not broken, "markdown links that do not resolve in the repository:\n" + "\n".join(broken)


# ------------------------------------------------------------------- the scanners fail when they should (unit tests)
@pytest.mark.parametrize("line, name", [
    ("Regimes (papers.md §B): K=128 tables", "bare papers.md"),
    ("see (`papers.md` §A)", "bare papers.md"),
    ("facts in ../shared/papers.md", "../shared"),
    ("see ../../shared/notes.txt", "../shared"),
    ("Both are the same two steps (`/work/shared/papers.md` §C)", "/work/"),
    ("  File /work/main/.venv/lib/python3.11/site-packages/torch/nn/modules/module.py, line 3", "/work/"),
    ("saved to /home/alice/runs/ckpt.pt", "/home/<user>"),
    ("open('/Users/bob/data.bin')", "/Users/<user>"),
    ("written to /tmp/tmpab12cd/model.pt", "/tmp/"),
    ("cache at /root/.cache/memlab", "/root/"),
    (r"C:\Users\carol\memlab", "C:\\Users\\"),
    ("[notes](file:///srv/notes.md)", "file://"),
])
def test_scanner_flags_outside_paths(line, name):
    assert name in {n for _, n, _ in find_outside_paths("first line\n" + line)}
    assert find_outside_paths("first line\n" + line)[0][0] == 2  # reports the right line


@pytest.mark.parametrize("line", [
    "A summary of the papers: notebooks/paper_notes.md (MemoryFormer Table 5, arXiv 2411.12992).",
    "see [paper notes](paper_notes.md) and my_papers.md",
    "https://github.com/someone/home/alice and https://example.org/work/x and https://h.io/tmp/y",
    "with tempfile.TemporaryDirectory() as d: torch.save(m, Path(d) / 'm.pt')   # tmp_path in tests",
    "python kernels/bench.py --quick    # tests run it with --out <tmp>",
    "notebooks/tmp/x and data/cache/home/y and runs/work/z and runs/sweeps/<study>/work/<key>/",
    "the framework's homework/ folder and ./papers.mdx are fine; so is site/root/x",
    "a line naming /tmp/ on purpose  # self-contained: ok",
])
def test_scanner_accepts_repo_paths_urls_and_tempfiles(line):
    assert find_outside_paths(line) == []


def test_scanner_flags_notebook_outputs_and_skips_images():
    nb = {
        "cells": [
            {"cell_type": "markdown", "source": ["# Title\n", "no paths here\n"]},
            {"cell_type": "code", "source": ["print(path)\n"], "outputs": [
                {"output_type": "stream", "name": "stdout", "text": ["ok\n", "saved /tmp/tmpq1w2/out.pt\n"]},
                {"output_type": "display_data", "data": {"image/png": "iVBOR/work/AAAA/tmp/BBBB", "text/plain": ["<Fig>"]}},
            ]},
        ],
        "metadata": {"kernelspec": {"name": "python3"}},
    }
    hits = find_outside_paths_in_notebook(nb)
    assert hits == [("cells[1].outputs[0].text", "/tmp/", "/tmp/")]
    nb["cells"][0]["source"].append("facts: papers.md §C\n")
    assert ("cells[0].source", "bare papers.md", "papers.md") in find_outside_paths_in_notebook(nb)


def test_link_checker_flags_missing_and_escaping_links():
    files = {"README.md", "kernels/README.md", "kernels/bench.py", "notebooks/paper_notes.md", "notebooks/00_tour.py"}
    docs = {"notebooks/paper_notes.md": "# Paper notes\n\n## 1. MemoryFormer (Ding et al., NeurIPS 2024)\n",
            "kernels/README.md": "# kernels/ — benchmarks\n"}
    text = "\n".join([
        "[ok](bench.py) [ok dir](../notebooks) [ok notes](../notebooks/paper_notes.md#1-memoryformer-ding-et-al-neurips-2024)",
        "[web](https://arxiv.org/abs/2411.12992) [mail](mailto:a@b.c) [self](#kernels--benchmarks) [bad self](#nope)",
        "`[in code](missing_in_code.md)`",
        "```",
        "[in fence](missing_in_fence.md)",
        "```",
        "[missing](../shared/papers.md) ![img](plots/missing.png) [up](../../outside.md)",
        "[bad anchor](../notebooks/paper_notes.md#no-such-heading)",
        "[ref]: ../papers.md",
    ])
    bad = dict(broken_links("kernels/README.md", text, files, docs.get))
    assert set(bad) == {"#nope", "../shared/papers.md", "plots/missing.png", "../../outside.md",
                        "../notebooks/paper_notes.md#no-such-heading", "../papers.md"}
    assert "outside" in bad["../../outside.md"]
    assert broken_links("README.md", "[notes](notebooks/paper_notes.md) [k](kernels/)", files) == []


def test_heading_anchors_follow_github():
    text = "# Paper notes — what memlab implements\n## 5. The structure: addressing → reading\n## Usage\n## Usage\n"
    assert heading_anchors(text) == {
        "paper-notes--what-memlab-implements", "5-the-structure-addressing--reading", "usage", "usage-1",
    }
