"""The README's commands are the real ones: CI runs its test command, its examples work."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import Mailbox

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    blocks = re.findall(r"```console\n\$ ([^\n]*\.venv/bin/python -m pytest[^\n]*)\n```", README)
    assert blocks, "README must show its test command"
    assert blocks[0].startswith(".venv/bin/pip install"), "the test command installs what the tests need"
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert blocks[0] in ci_lines


def test_the_quick_start_installs_without_dev_tools() -> None:
    quick_start = re.search(r"```console\n\$ (python3 -m venv[^\n]*)\n", README)
    assert quick_start is not None
    assert "[dev]" not in quick_start.group(1)
    assert "[test]" not in quick_start.group(1)


@pytest.mark.parametrize("backend", ["asyncio"])  # the CLI run synchronously: the daemon's backend is not its subject
def test_every_everyday_mailctl_command_in_the_readme_works(mailbox: Mailbox) -> None:
    commands = re.findall(r"^\$ mailctl ([^#\n]+?)\s*(?:#.*)?$", README, flags=re.MULTILINE)
    assert len(commands) >= 5
    token = json.loads(mailbox.mailctl("register", "--program", "codex", "--model", "gpt", "--name", "BlueLake",
                                       "--json").stdout)["registration_token"]
    mailbox.mailctl("send", "HumanOperator", "Hello", "First message")  # the quick start's message #1
    for command in commands:
        args = shlex.split(command.replace("/home/me/app", str(mailbox.root)).replace("=TOKEN", f"={token}"))
        if args[0] == "register":
            args[args.index("BlueLake")] = "BlueLake2"
        if args[:2] == ["daemon", "status"]:
            run = mailbox.mailctl(*args, check=False)
            assert run.returncode in (0, 3), run.stderr
        else:
            mailbox.mailctl(*args)
