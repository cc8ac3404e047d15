"""The mailctl command line: help everywhere, JSON results, exit codes, and a light import set."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from mailctl.cli import build_parser
from mailctl.cli.call import parse_pairs
from shared.errors import InvalidArgument
from tests.conftest import Mailbox

Found = list[tuple[tuple[str, ...], argparse.ArgumentParser]]


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Found:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.extend(walk(sub, (*path, name)))
    return found


def test_every_command_has_help_and_an_example() -> None:
    for path, parser in walk(build_parser()):
        assert parser.description, f"mailctl {' '.join(path)} has no description"
        assert parser.epilog, f"mailctl {' '.join(path)} has no example"
        assert "example: mailctl" in parser.epilog


def test_key_value_pairs_parse_json_values_and_fall_back_to_strings() -> None:
    assert parse_pairs(["a=1", "b=true", "c=[1,2]", "d=hello", "e=", "f=a=b"], None) == {
        "a": 1, "b": True, "c": [1, 2], "d": "hello", "e": "", "f": "a=b",
    }
    assert parse_pairs(["x=2"], '{"x": 1, "y": "z"}') == {"x": 2, "y": "z"}
    with pytest.raises(InvalidArgument, match="key=value"):
        parse_pairs(["novalue"], None)
    with pytest.raises(InvalidArgument, match="JSON object"):
        parse_pairs([], "[1]")


@pytest.mark.parametrize("backend", ["asyncio"])  # the CLI run synchronously: the daemon's backend is not its subject
def test_call_prints_json_and_errors_exit_1_with_the_code(mailbox: Mailbox) -> None:
    ok = mailbox.mailctl("call", "ensure_project", "human_key=/srv/app")
    assert json.loads(ok.stdout)["slug"] == "srv-app"
    bad = mailbox.mailctl("call", "ensure_project", "--json", '{"human_key": ""}', check=False)
    assert bad.returncode == 1
    assert bad.stderr.startswith("mailctl: INVALID_ARGUMENT: ")
    usage = mailctl_usage_error()
    assert usage.returncode == 2


def mailctl_usage_error() -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailctl", "daemon", "frobnicate"], capture_output=True, text=True,
                          check=False)


def test_mailctl_never_imports_the_heavy_daemon_stack() -> None:
    probe = (
        "import sys, mailctl.cli, shared.client\n"
        "mailctl.cli.build_parser()\n"
        "heavy = [m for m in ('mcp', 'apsw', 'git', 'maild', 'pydantic', 'anyio', 'rich') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == ""


@pytest.mark.parametrize("backend", ["asyncio"])  # as above
def test_mail_commands_act_as_the_operator_and_as_an_agent_with_its_token(mailbox: Mailbox) -> None:
    registered = json.loads(mailbox.mailctl("register", "--program", "codex", "--model", "gpt", "--name",
                                            "BlueLake", "--json").stdout)
    token = registered["registration_token"]
    sent = mailbox.mailctl("send", "blue-lake", "Please review", "The PR is ready.", "--importance", "high")
    assert sent.stdout.startswith("sent #1 from HumanOperator to BlueLake")
    inbox = mailbox.mailctl("inbox", "--as", "BlueLake", f"--token={token}", "--bodies")
    assert "BlueLake: 1 unread" in inbox.stdout
    assert "The PR is ready." in inbox.stdout
    spoof = mailbox.mailctl("inbox", "--as", "BlueLake", check=False)
    assert spoof.returncode == 1
    assert "AUTHENTICATION_REQUIRED" in spoof.stderr
    mailbox.mailctl("ack", "1", "--as", "BlueLake", f"--token={token}")
    assert "0 unread" in mailbox.mailctl("inbox", "--as", "BlueLake", f"--token={token}").stdout
    whois = mailbox.mailctl("whois", "BlueLake")
    assert whois.stdout.startswith("BlueLake (codex, gpt)")
    reply = mailbox.mailctl("send", "HumanOperator", "Re: Please review", "-", "--as", "BlueLake", f"--token={token}",
                            "--json")
    assert json.loads(reply.stdout)["deliveries"][0]["payload"]["from"] == "BlueLake"
