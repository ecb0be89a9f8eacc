"""Training text for memlab's tiny language models, and a synthetic fact-recall probe.

Corpora (byte-level: token = one UTF-8 byte, vocab 256):

    python-docs      default, offline everywhere: CPython's own documentation — the pydoc topics (``pydoc_data``) plus
                     every module/class/function docstring of the standard library, read from the *source files* with
                     ``ast`` (never imported: some stdlib modules have side effects on import). Built once, cached under
                     ``data/cache/`` with a SHA-256 checksum, split train/val per document by a fixed hash.
    --text PATH      any local text file: the first 90 % is train, the last 10 % val.
    tinyshakespeare  optional download; fails offline with one clear message.

Facts (``FactSet``): entities with attributes rendered as short sentences ("Bavoli lives in Krenmor."), mixed into
the training stream; the probe asks held-out questions and scores exact match of the attribute.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import sysconfig
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .._checks import check_positive_int
from .io import atomic_write_bytes

CORPORA = ("python-docs", "tinyshakespeare")
DEFAULT_CORPUS = "python-docs"
VAL_PER_MILLE = 50  # 5 % of documents go to validation
TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "lib2to3"}


# ---------------------------------------------------------------------------------------------------------- paths
def repo_root() -> Path | None:
    """The memlab checkout this package lives in (None for a non-editable install)."""
    root = Path(__file__).resolve().parents[2]  # memlab/lab/data.py -> the checkout
    return root if (root / "pyproject.toml").exists() and (root / "data").is_dir() else None


def default_cache_dir() -> Path:
    """``$MEMLAB_CACHE`` if set, else ``<repo>/data/cache``, else ``~/.cache/memlab``."""
    if os.environ.get("MEMLAB_CACHE"):
        return Path(os.environ["MEMLAB_CACHE"])
    root = repo_root()
    return root / "data" / "cache" if root else Path.home() / ".cache" / "memlab"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------------------- python docs
def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_source_files(root: Path) -> list[Path]:
    """Every ``*.py`` under ``root`` outside site-packages and test folders, in sorted order."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]  # prune: never walk site-packages or test folders
        found.extend(Path(folder) / f for f in files if f.endswith(".py"))
    return sorted(found)


def docstrings_from_source(source: str | bytes, module: str = "") -> list[tuple[str, str]]:
    """(qualified name, cleaned docstring) of the module, its classes and functions — parsed, never executed."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    found = []

    def visit(node, prefix):
        doc = ast.get_docstring(node, clean=True)
        if doc:
            found.append((prefix, doc))
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, f"{prefix}.{child.name}" if prefix else child.name)

    visit(tree, module)
    return found


def pydoc_topics() -> dict[str, str]:
    """CPython's pydoc topics (the language reference text ``help('if')`` shows); {} where pydoc_data is missing."""
    try:
        from pydoc_data.topics import topics  # a plain dict literal: importing it has no side effects
    except ImportError:
        return {}
    return dict(topics)


def python_docs_documents(root: Path | None = None, include_topics: bool = True) -> list[tuple[str, str]]:
    """The documents of the python-docs corpus, (name, text), in a fixed order: pydoc topics, then docstrings."""
    docs = [(f"topic:{k}", v.strip()) for k, v in sorted(pydoc_topics().items())] if include_topics else []
    root = Path(root) if root is not None else stdlib_dir()
    for path in stdlib_source_files(root):
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        docs.extend((f"{module}:{name}", text) for name, text in docstrings_from_source(path.read_bytes(), module))
    return docs


def split_documents(docs: list[tuple[str, str]], val_per_mille: int = VAL_PER_MILLE) -> tuple[bytes, bytes]:
    """Deterministic per-document split: crc32(name) mod 1000 < val_per_mille → validation. Documents are joined
    with blank lines and encoded as UTF-8."""
    train, val = [], []
    for name, text in docs:
        (val if zlib.crc32(name.encode()) % 1000 < val_per_mille else train).append(text)
    return "\n\n".join(train).encode(), "\n\n".join(val).encode()


# ---------------------------------------------------------------------------------------------------------- corpus
@dataclass
class Corpus:
    """A byte-level corpus: ``train`` and ``val`` are uint8 tensors of token ids (= bytes)."""

    name: str
    train: torch.Tensor
    val: torch.Tensor
    meta: dict = field(default_factory=dict)

    vocab_size = 256

    def __repr__(self) -> str:
        return f"Corpus({self.name!r}, train={self.train.numel():,} bytes, val={self.val.numel():,} bytes)"


def byte_tensor(data: bytes) -> torch.Tensor:
    """The bytes as a uint8 tensor of token ids."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)


def build_python_docs(cache_dir: str | os.PathLike | None = None, root: str | os.PathLike | None = None,
                      force: bool = False, verbose: bool = False) -> Corpus:
    """Build (or load from cache) the default corpus. The cache holds train/val bytes and a JSON with their SHA-256;
    a file whose checksum does not match is rebuilt."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tag = "python-docs" if root is None else f"python-docs-{zlib.crc32(str(root).encode()):08x}"
    meta_path, train_path, val_path = cache / f"{tag}.json", cache / f"{tag}.train.bin", cache / f"{tag}.val.bin"
    if not force and meta_path.exists() and train_path.exists() and val_path.exists():
        meta = json.loads(meta_path.read_text())
        train, val = train_path.read_bytes(), val_path.read_bytes()
        if sha256(train) == meta.get("train_sha256") and sha256(val) == meta.get("val_sha256"):
            return Corpus("python-docs", byte_tensor(train), byte_tensor(val), meta)
        if verbose:
            print(f"checksum mismatch in {cache}; rebuilding the corpus")
    if verbose:
        print("building the python-docs corpus from the standard library's sources (once; ~10 s)…", flush=True)
    docs = python_docs_documents(root, include_topics=root is None)
    if not docs:
        raise FileNotFoundError(f"no Python sources with docstrings under {root or stdlib_dir()}")
    train, val = split_documents(docs)
    import platform
    meta = {
        "corpus": "python-docs", "python": platform.python_version(), "documents": len(docs),
        "train_bytes": len(train), "val_bytes": len(val), "train_sha256": sha256(train), "val_sha256": sha256(val),
        "val_per_mille": VAL_PER_MILLE,
    }
    atomic_write_bytes(train_path, train)
    atomic_write_bytes(val_path, val)
    atomic_write_bytes(meta_path, (json.dumps(meta, indent=2) + "\n").encode())
    return Corpus("python-docs", byte_tensor(train), byte_tensor(val), meta)


def quick_python_docs(n_files: int = 60, root: str | os.PathLike | None = None) -> Corpus:
    """A small in-memory python-docs corpus from the first ``n_files`` stdlib sources (no cache, ~1 s): for fast mode
    and tests. Same builder, same split rule, just fewer documents."""
    root = Path(root) if root is not None else stdlib_dir()
    docs = []
    for path in stdlib_source_files(root)[:n_files]:
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        docs.extend((f"{module}:{name}", text) for name, text in docstrings_from_source(path.read_bytes(), module))
    train, val = split_documents(docs)
    return Corpus("python-docs-quick", byte_tensor(train), byte_tensor(val), {"documents": len(docs)})


def load_text_file(path: str | os.PathLike, val_fraction: float = 0.1) -> Corpus:
    """Any local file as a byte corpus: the first (1 − val_fraction) is train, the rest val."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path} (pass an existing text file to --text)")
    data = path.read_bytes()
    if len(data) < 1000:
        raise ValueError(f"corpus file {path} holds only {len(data)} bytes; give at least a few KB of text")
    cut = int(len(data) * (1 - val_fraction))
    return Corpus(f"text:{path.name}", byte_tensor(data[:cut]), byte_tensor(data[cut:]),
                  {"corpus": str(path), "train_bytes": cut, "val_bytes": len(data) - cut, "sha256": sha256(data)})


def download_tinyshakespeare(cache_dir: str | os.PathLike | None = None, timeout: float = 10.0) -> Corpus:
    """TinyShakespeare (1.1 MB), downloaded once; offline this raises one clear ``RuntimeError``."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / "tinyshakespeare.txt"
    if not path.exists():
        import urllib.request
        try:
            with urllib.request.urlopen(TINYSHAKESPEARE_URL, timeout=timeout) as r:
                data = r.read()
        except OSError as e:
            raise RuntimeError(
                f"could not download tinyshakespeare ({e.__class__.__name__}: {e}); this machine looks offline — "
                f"use the default offline corpus (--corpus python-docs) or a local file (--text PATH)"
            ) from None
        atomic_write_bytes(path, data)
    return load_text_file(path)


def load_corpus(name: str = DEFAULT_CORPUS, text: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None, verbose: bool = False) -> Corpus:
    """The corpus a run trains on: ``text`` (a local file) wins over ``name``."""
    if text is not None:
        return load_text_file(text)
    if name == "python-docs":
        return build_python_docs(cache_dir, verbose=verbose)
    if name == "tinyshakespeare":
        return download_tinyshakespeare(cache_dir)
    raise ValueError(f"unknown corpus {name!r}; choose one of {CORPORA} or pass --text PATH")


def get_batch(data: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator):
    """Random windows of ``seq_len + 1`` bytes → (inputs, targets), both (batch_size, seq_len) int64."""
    if data.numel() <= seq_len + 1:
        raise ValueError(f"a split of {data.numel()} bytes is too short for seq_len={seq_len}")
    starts = torch.randint(0, data.numel() - seq_len - 1, (batch_size,), generator=generator)
    windows = torch.stack([data[s: s + seq_len + 1] for s in starts.tolist()]).long()
    return windows[:, :-1], windows[:, 1:]


def eval_batches(data: torch.Tensor, n_batches: int, batch_size: int, seq_len: int, seed: int = 1234):
    """A fixed list of validation batches (the same every evaluation, so val curves are comparable)."""
    g = torch.Generator().manual_seed(seed)
    return [get_batch(data, batch_size, seq_len, g) for _ in range(n_batches)]


# ---------------------------------------------------------------------------------------------------------- facts
ATTRIBUTES = {
    # attribute: (statement template, question template, values)
    "city": ("{e} lives in {v}.", "Q: Where does {e} live? A: {v}.",
             ["Paris", "Lima", "Oslo", "Cairo", "Delhi", "Tokyo", "Quito", "Rome", "Sofia", "Perth", "Dakar", "Hanoi"]),
    "colour": ("{e} likes the colour {v}.", "Q: What colour does {e} like? A: {v}.",
               ["red", "blue", "green", "amber", "violet", "teal", "pink", "grey", "gold", "white", "black", "cyan"]),
    "job": ("{e} works as a {v}.", "Q: What is the job of {e}? A: {v}.",
            ["baker", "pilot", "nurse", "tailor", "farmer", "judge", "potter", "miner", "sailor", "singer", "clerk",
             "chef"]),
    "pet": ("{e} has a pet {v}.", "Q: What pet does {e} have? A: {v}.",
            ["cat", "dog", "owl", "goat", "frog", "horse", "parrot", "rabbit", "snake", "turtle", "mouse", "crow"]),
}
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "st", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]


def entity_names(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct made-up names (two or three syllables, capitalised), deterministic in ``seed``."""
    rng = random.Random(seed)
    names, seen = [], set()
    while len(names) < n:
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.choice((2, 3)))).capitalize()
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


@dataclass
class FactSet:
    """Synthetic facts: ``n_entities`` × the attributes in ``ATTRIBUTES``, each value drawn at random.

    Training text holds every fact as a statement, and the question form for the entities *not* held out. The probe
    asks questions about the ``heldout_fraction`` of entities whose answers were only ever seen as statements, plus
    the statements' completions ("Bavoli lives in" → "Lima"), and scores exact match.
    """

    n_entities: int = 200
    seed: int = 0
    heldout_fraction: float = 0.5
    facts: dict = field(init=False)
    heldout: set = field(init=False)

    def __post_init__(self):
        check_positive_int(self.n_entities, "n_entities")
        if not 0 <= self.heldout_fraction <= 1:
            raise ValueError(f"heldout_fraction must lie in [0, 1], got {self.heldout_fraction}")
        rng = random.Random(self.seed + 1)
        names = entity_names(self.n_entities, self.seed)
        self.facts = {e: {a: rng.choice(spec[2]) for a, spec in ATTRIBUTES.items()} for e in names}
        self.heldout = set(names[: round(self.heldout_fraction * self.n_entities)])

    @property
    def chance(self) -> float:
        """Exact-match accuracy of guessing a value uniformly at random."""
        return sum(1 / len(spec[2]) for spec in ATTRIBUTES.values()) / len(ATTRIBUTES)

    def sentences(self, rng: random.Random | None = None) -> list[str]:
        """Every training sentence: all statements, plus questions about entities that are not held out."""
        out = []
        for e, attrs in self.facts.items():
            for a, v in attrs.items():
                statement, question, _ = ATTRIBUTES[a]
                out.append(statement.format(e=e, v=v))
                if e not in self.heldout:
                    out.append(question.format(e=e, v=v))
        if rng is not None:
            rng.shuffle(out)
        return out

    def text(self, repeats: int = 4, seed: int = 0) -> bytes:
        """The training stream: ``repeats`` shuffled passes over ``sentences()``, one sentence per line."""
        rng = random.Random(seed)
        return ("\n".join("\n".join(self.sentences(rng)) for _ in range(repeats)) + "\n").encode()

    def probe(self, kind: str = "question") -> list[tuple[str, str]]:
        """(prompt, answer) pairs. ``question``: questions about held-out entities (never seen as questions);
        ``statement``: completion of every statement (pure recall of a seen sentence)."""
        pairs = []
        for e, attrs in self.facts.items():
            for a, v in attrs.items():
                statement, question, _ = ATTRIBUTES[a]
                template = question if kind == "question" else statement
                if kind == "question" and e not in self.heldout:
                    continue
                prompt = template.format(e=e, v="\0").split("\0")[0].rstrip()
                pairs.append(("\n" + prompt, v))
        if kind not in ("question", "statement"):
            raise ValueError(f"probe kind must be 'question' or 'statement', got {kind!r}")
        return pairs


def normalize_answer(text: str) -> str:
    """What exact match compares: the text up to the first '.' or newline, stripped and lower-cased."""
    for stop in (".", "\n"):
        text = text.split(stop, 1)[0]
    return text.strip().lower()


def exact_match(predictions: list[str], answers: list[str]) -> float:
    """Share of predictions whose normalised text equals the normalised answer."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    if not answers:
        return 0.0
    return sum(normalize_answer(p) == normalize_answer(a) for p, a in zip(predictions, answers)) / len(answers)


@torch.no_grad()
def greedy_answers(model, prompts: list[str], max_new_tokens: int = 12, batch_size: int = 64) -> list[str]:
    """Greedy completions of ``prompts`` (byte-level), batched by left-padding-free grouping on prompt length."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [""] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p.encode()), []).append(i)
    try:
        for _, idx in sorted(by_len.items()):
            for s in range(0, len(idx), batch_size):
                chunk = idx[s: s + batch_size]
                ids = torch.tensor([list(prompts[i].encode()) for i in chunk], dtype=torch.long, device=device)
                gen = model.generate(ids, max_new_tokens, temperature=0)[:, ids.shape[1]:]
                for i, row in zip(chunk, gen.tolist()):
                    out[i] = bytes(row).decode("utf-8", errors="replace")
    finally:
        model.train(was_training)
    return out


def fact_accuracy(model, facts: FactSet, kind: str = "question", max_new_tokens: int = 10) -> float:
    """Exact-match accuracy of greedy answers to ``facts.probe(kind)``."""
    pairs = facts.probe(kind)
    answers = greedy_answers(model, [p + " " for p, _ in pairs], max_new_tokens)
    return exact_match(answers, [a for _, a in pairs])
