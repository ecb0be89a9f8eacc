"""Build (or verify) memlab's offline training corpus: ``python data/build_corpus.py [--force] [--facts N]``.

The work happens in ``memlab.lab.data``; this script is the entry point a reader finds next to the cache. Output goes to
``data/cache/`` (git-ignored): ``python-docs.train.bin``, ``python-docs.val.bin`` (raw UTF-8 bytes = token ids) and
``python-docs.json`` (sizes, Python version, SHA-256 of both splits).
"""
from __future__ import annotations

import argparse

from memlab.lab import data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache verifies")
    parser.add_argument("--cache", default=None, help="cache folder (default data/cache)")
    parser.add_argument("--facts", type=int, default=0, help="also print N entities' synthetic facts")
    args = parser.parse_args()
    corpus = data.build_python_docs(args.cache, force=args.force, verbose=True)
    print(corpus)
    for key in ("python", "documents", "train_bytes", "val_bytes", "train_sha256", "val_sha256"):
        print(f"  {key}: {corpus.meta[key]}")
    print("first bytes of train:\n" + bytes(corpus.train[:300].tolist()).decode(errors="replace"))
    if args.facts:
        facts = data.FactSet(args.facts)
        print("\n".join(facts.sentences()[: 4 * args.facts]))


if __name__ == "__main__":
    main()
