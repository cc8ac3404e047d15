"""Search over mail sent through the real tools: the privacy boundary end to end."""

from __future__ import annotations

import json

import pytest

from shared.client import DaemonClient
from shared.errors import AuthenticationRequired
from tests.conftest import Mailbox

PROJECT = "/work/app"


def agent(mailbox: Mailbox, name: str) -> DaemonClient:
    conn = mailbox.client(hello={"session": f"s-{name}", "client": "shim", "pid": 1})
    conn.call_tool("register_agent", {"project_key": PROJECT, "program": "p", "model": "m", "name": name})
    return conn


def test_in_participants_mode_agents_find_only_their_own_mail_and_the_operator_finds_all(mailbox: Mailbox) -> None:
    mailbox.paths.state_dir.mkdir(parents=True, exist_ok=True)
    (mailbox.paths.state_dir / "config.toml").write_text("message_visibility = 'participants'\n")
    blue, green, red = agent(mailbox, "BlueLake"), agent(mailbox, "GreenCastle"), agent(mailbox, "RedFox")
    blue.call_tool("send_message", {"project_key": PROJECT, "to": "GreenCastle", "subject": "Deploy plan",
                                    "body_md": "We deploy the auth service on Friday."})
    red.call_tool("send_message", {"project_key": PROJECT, "to": "BlueLake", "subject": "Deploy credentials",
                                   "body_md": "Private: the deploy token rotates."})
    seen = green.call_tool("search_mailbox", {"project_key": PROJECT, "query": "deploy"})
    assert [m["subject"] for m in seen["result"]] == ["Deploy plan"]
    both = blue.call_tool("search_mailbox", {"project_key": PROJECT, "query": "deploy"})
    assert {m["subject"] for m in both["result"]} == {"Deploy plan", "Deploy credentials"}
    with mailbox.client(hello={"session": "unbound", "client": "shim", "pid": 1}) as stranger, \
            pytest.raises(AuthenticationRequired):
        stranger.call_tool("search_mailbox", {"project_key": PROJECT, "query": "deploy"})
    operator = json.loads(mailbox.mailctl("search", "deploy", "--project", PROJECT, "--json").stdout)
    results = operator["result"] if isinstance(operator, dict) else operator
    assert {m["subject"] for m in results} == {"Deploy plan", "Deploy credentials"}
    for conn in (blue, green, red):
        conn.close()
