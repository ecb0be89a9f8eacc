"""memlab's command line: ``python -m memlab <command>``.

Each command lives in its own module with ``add_arguments(parser)`` and ``run(args)``; this file only registers them.
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: command name → (module, one-line help). Add a command by adding a line here.
COMMANDS = {
    "compare": ("memlab.lab.compare", "compare nn.Linear with memlab's memory layers: size, FLOPs, CPU time, identities"),
    "train": ("memlab.lab.train", "train a tiny LM (dense, moe, memoryformer, pkm, memoryplus, peer) on the offline corpus"),
    "generate": ("memlab.lab.generate", "sample text from a trained run's checkpoint"),
    "sweep": ("memlab.lab.sweep", "ablation studies: grids of configs × seeds, cached, resumable, parallel (--list)"),
    "demo": ("memlab.lab.demo", "the main job: train dense, MemoryFormer and Memory+ tiny LMs and compare them in one table"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memlab", description="memlab: a lab for memory layers")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return importlib.import_module(args._module).run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
