"""Every example in every command's --help runs as written, on the samples and the embedded model.

The examples are read from the help text itself, so an example that names a missing file or an
option that does not exist fails here. ``train`` and ``convert`` need a data set or a released
checkpoint that cannot be fetched here: their examples are parsed, and every option they use must
exist; ``app`` starts a server and is left to its own tests.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from cmedit.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
NOT_RUN = {"train", "convert", "app"}


def help_text(*command: str) -> str:
    result = CliRunner().invoke(main, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def examples(text: str) -> list[list[str]]:
    """The ``cmedit ...`` lines of a help text (continuations joined, comments dropped), as argv lists."""
    lines, joined = text.splitlines(), []
    for i, line in enumerate(lines):
        if line.strip().startswith("cmedit ") and (i == 0 or not lines[i - 1].rstrip().endswith("\\")):
            command = line.strip()
            j = i
            while command.endswith("\\"):
                j += 1
                command = command[:-1] + " " + lines[j].strip()
            joined.append(shlex.split(command, comments=True)[1:])
    return joined


def all_examples() -> list[tuple[str, list[str]]]:
    found = [("main", args) for args in examples(help_text())]
    for name in COMMANDS:
        found += [(name, args) for args in examples(help_text(name))]
    return found


@pytest.fixture
def workdir(tmp_path):
    folder = tmp_path
    for name in ("samples", "cmedit", "checkpoints"):
        (folder / name).symlink_to(ROOT / name)
    return folder


def test_every_command_has_examples():
    found = {name for name, _ in all_examples()}
    assert found >= set(COMMANDS) | {"main"}, set(COMMANDS) - found


@pytest.mark.parametrize("source, args", [case for case in all_examples()
                                          if case[0] not in NOT_RUN and case[1][0] not in NOT_RUN],
                         ids=lambda value: value if isinstance(value, str) else " ".join(value)[:60])
def test_example_runs_as_written(source, args, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, (args, result.output)


@pytest.mark.parametrize("source, args", [case for case in all_examples()
                                          if (case[0] in NOT_RUN or case[1][0] in NOT_RUN) and case[1][0] != "app"],
                         ids=lambda value: value if isinstance(value, str) else " ".join(value)[:60])
def test_example_options_exist(source, args):
    command = main.get_command(None, args[0])
    known = {opt for param in command.params for opt in param.opts + param.secondary_opts}
    used = {arg.split("=")[0] for arg in args[1:] if re.match(r"--?[a-zA-Z]", arg)}
    assert used <= known, used - known
