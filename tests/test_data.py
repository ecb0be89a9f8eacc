"""memlab.lab.data: the offline corpus builder (ast, never import), caching with checksums, text files, the fact probe."""
from __future__ import annotations

import json
import urllib.request

import pytest
import torch
from torch import nn

from memlab.lab import data

SIDE_EFFECT_MODULE = '''"""A module whose import would be harmful."""
import pathlib
pathlib.Path({marker!r}).write_text("imported!")
raise SystemExit("never import me")


class Widget:
    """A widget holds parts."""

    def spin(self):
        """Spin the widget."""
'''


@pytest.fixture
def fake_stdlib(tmp_path):
    root = tmp_path / "lib"
    (root / "pkg").mkdir(parents=True)
    (root / "tests").mkdir()
    marker = tmp_path / "marker.txt"
    (root / "danger.py").write_text(SIDE_EFFECT_MODULE.format(marker=str(marker)))
    (root / "pkg" / "__init__.py").write_text('"""The pkg package."""\n')
    (root / "pkg" / "util.py").write_text('def helper():\n    """Help a lot.\n\n    More help.\n    """\n')
    (root / "tests" / "test_x.py").write_text('"""A test module, skipped."""\n')
    (root / "broken.py").write_text("def (:\n")  # syntax errors are skipped
    for i in range(40):  # enough documents that both splits are non-empty
        (root / f"mod{i:02d}.py").write_text(f'"""Module number {i} explains feature {i} at length."""\n')
    return root, marker


def test_docstrings_are_read_with_ast_without_importing(fake_stdlib, tmp_path):
    root, marker = fake_stdlib
    docs = dict(data.python_docs_documents(root, include_topics=False))
    assert not marker.exists()  # the module's side effect never ran
    assert docs["danger:danger"] == "A module whose import would be harmful."
    assert docs["danger:danger.Widget.spin"] == "Spin the widget."
    assert docs["pkg.util:pkg.util.helper"] == "Help a lot.\n\nMore help."
    assert not any(k.startswith("tests") for k in docs)


def test_builder_caches_with_checksum_and_rebuilds_corrupt_cache(fake_stdlib, tmp_path, monkeypatch):
    root, _ = fake_stdlib
    cache = tmp_path / "cache"
    corpus = data.build_python_docs(cache, root=root)
    assert corpus.train.dtype == torch.uint8 and corpus.train.numel() > 0 and corpus.val.numel() > 0
    meta_file = next(cache.glob("*.json"))
    meta = json.loads(meta_file.read_text())
    assert meta["train_sha256"] == data.sha256(bytes(corpus.train.tolist()))
    # second load comes from the cache: building again would fail
    monkeypatch.setattr(data, "python_docs_documents", lambda *a, **k: pytest.fail("rebuilt instead of cached"))
    again = data.build_python_docs(cache, root=root)
    assert torch.equal(again.train, corpus.train) and torch.equal(again.val, corpus.val)
    # a corrupted cache file fails its checksum and is rebuilt
    monkeypatch.undo()
    train_file = next(cache.glob("*.train.bin"))
    train_file.write_bytes(b"garbage")
    rebuilt = data.build_python_docs(cache, root=root)
    assert torch.equal(rebuilt.train, corpus.train)
    assert not list(cache.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_split_is_deterministic_and_per_document():
    docs = [(f"doc{i}", f"text {i}") for i in range(400)]
    a, b = data.split_documents(docs), data.split_documents(list(docs))
    assert a == b
    train, val = a
    assert 0 < len(val) < len(train)
    val_docs = set(val.decode().split("\n\n"))
    assert val_docs.isdisjoint(train.decode().split("\n\n"))


def test_real_stdlib_is_found_and_parsed():
    files = data.stdlib_source_files(data.stdlib_dir())
    assert len(files) > 100
    json_init = next(f for f in files if f.parts[-2:] == ("json", "__init__.py"))
    names = [n for n, _ in data.docstrings_from_source(json_init.read_bytes(), "json")]
    assert "json" in names and "json.dumps" in names


def test_text_file_corpus_and_errors(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("hello world. " * 200)
    c = data.load_corpus(text=f)
    assert c.train.numel() + c.val.numel() == 2600 and c.val.numel() == 260
    with pytest.raises(FileNotFoundError, match="corpus file not found"):
        data.load_corpus(text=tmp_path / "missing.txt")
    (tmp_path / "tiny.txt").write_text("x")
    with pytest.raises(ValueError, match="only 1 bytes"):
        data.load_text_file(tmp_path / "tiny.txt")
    with pytest.raises(ValueError, match="unknown corpus 'wiki'"):
        data.load_corpus("wiki")


def test_online_corpus_fails_offline_with_one_clear_message(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError, match="looks offline — use the default offline corpus"):
        data.load_corpus("tinyshakespeare", cache_dir=tmp_path)


def test_get_batch_shifts_targets():
    stream = torch.arange(100, dtype=torch.uint8)
    x, y = data.get_batch(stream, 4, 10, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 10) and x.dtype == torch.long
    torch.testing.assert_close(y[:, :-1], x[:, 1:])
    with pytest.raises(ValueError, match="too short"):
        data.get_batch(stream[:5], 1, 10, torch.Generator())


def test_fact_set_is_deterministic_and_holds_questions_out():
    facts = data.FactSet(30, seed=3)
    assert data.FactSet(30, seed=3).facts == facts.facts
    assert len(facts.heldout) == 15
    text = facts.text().decode()
    for prompt, answer in facts.probe("statement"):
        assert f"{prompt.strip()} {answer}." in text  # every statement is trained on
    questions = facts.probe("question")
    assert len(questions) == 15 * len(data.ATTRIBUTES)
    for prompt, answer in questions:
        assert prompt.strip() not in text  # held-out questions never appear
    assert facts.chance == pytest.approx(1 / 12)


def test_exact_match_scorer():
    assert data.normalize_answer(" Lima. Then more") == "lima"
    assert data.normalize_answer("cat\nQ: next") == "cat"
    assert data.exact_match(["Lima.", "Oslo", "Rome is"], ["Lima", "oslo", "Rome"]) == pytest.approx(2 / 3)
    assert data.exact_match([], []) == 0.0
    with pytest.raises(ValueError, match="2 predictions for 1 answers"):
        data.exact_match(["a", "b"], ["a"])


class Oracle(nn.Module):
    """A stand-in model that 'knows' the answers: generate appends the right bytes for each prompt."""

    def __init__(self, answers):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))
        self.answers = answers

    def generate(self, ids, max_new_tokens, temperature=1.0):
        rows = []
        for row in ids.tolist():
            answer = (self.answers[bytes(row).decode()] + ".\nQ").encode()[:max_new_tokens]
            rows.append(row + list(answer) + [10] * (max_new_tokens - len(answer)))
        return torch.tensor(rows)


def test_fact_accuracy_plumbing_with_an_oracle():
    facts = data.FactSet(12, seed=1)
    pairs = facts.probe("question")
    answers = {p + " ": a for p, a in pairs}
    assert data.fact_accuracy(Oracle(answers), facts, "question") == 1.0
    wrong = {p: "nobody" for p in answers}
    assert data.fact_accuracy(Oracle(wrong), facts, "question") == 0.0


def test_repo_root_is_the_checkout_this_package_lives_in():
    """Notebooks write runs/ under repo_root(); after the package moved into memlab/lab/ it once pointed one folder too
    high and returned None, so notebook runs landed in notebooks/runs/."""
    from pathlib import Path

    from memlab.lab import data as lab_data

    root = lab_data.repo_root()
    assert root == Path(__file__).resolve().parents[1]
    assert (root / "memlab" / "lab" / "data.py").exists()
