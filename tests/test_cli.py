"""The command line: the parser builds, `compare` is registered, help works. (The compare run is tested elsewhere.)"""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from memlab.__main__ import COMMANDS, build_parser, main


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return dict(actions[0].choices)


def test_parser_builds_and_registers_compare():
    parser = build_parser()
    assert parser.prog == "memlab"
    subs = subcommands(parser)
    assert "compare" in subs
    assert set(subs) == set(COMMANDS)
    assert COMMANDS["compare"][0] == "memlab.lab.compare"


def test_every_command_module_has_add_arguments_and_run():
    import importlib

    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(module)
        assert callable(mod.add_arguments) and callable(mod.run), name
        assert help_text


def test_main_without_command_prints_help(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "usage: memlab" in out and "compare" in out


def test_compare_help_in_process(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--help"])
    assert exc.value.code == 0
    assert "usage: memlab compare" in capsys.readouterr().out


def test_unknown_command_exits_with_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["nonsense"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_python_dash_m_memlab_compare_help():
    out = subprocess.run([sys.executable, "-m", "memlab", "compare", "--help"], capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "usage: memlab compare" in out.stdout
