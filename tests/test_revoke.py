"""Revoking JWTs before they expire (`mailctl http revoke`): by jti and by agent, on a real bridge;
refused to agents' own JWTs; kept across a daemon restart; shared by two bridges on one real Redis."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Mailbox, git_init
from tests.test_http import SECRET, Bridge, redis_url, start_bridge, token

__all__ = ["redis_url"]  # a fixture, used by name below
JWT = f'http_jwt_enabled = true\nhttp_jwt_secret = "{SECRET}"\n'


def statuses(bridge: Bridge, tokens: dict[str, str]) -> dict[str, int]:
    return {name: bridge.tool("health_check", {}, value)[0] for name, value in tokens.items()}


def revoke(mailbox: Mailbox, *args: str) -> dict[str, Any]:
    done = mailbox.mailctl("http", "revoke", *args, "--json")
    return dict(json.loads(done.stdout))


@pytest.mark.parametrize("backend", ["asyncio"])
def test_a_revoked_token_is_refused_others_are_not_and_it_survives_a_restart(mailbox: Mailbox) -> None:
    bridge = start_bridge(mailbox, JWT)
    tokens = {"leaked": token({"jti": "jti-leaked", "agent": "BlueLake", "role": "writer"}),
              "same_agent": token({"jti": "jti-other", "agent": "BlueLake", "role": "writer"}),
              "bystander": token({"jti": "jti-fine", "agent": "GreenCastle", "role": "writer"})}
    assert statuses(bridge, tokens) == {"leaked": 200, "same_agent": 200, "bystander": 200}

    made = revoke(mailbox, "--jti", "jti-leaked", "--reason", "pasted in a CI log")
    assert made["revoked"][0]["kind"] == "jti"
    # The next call is refused, although the bridge had verified (and cached) that token a moment ago.
    assert statuses(bridge, tokens) == {"leaked": 401, "same_agent": 200, "bystander": 200}

    revoke(mailbox, "--agent", "bluelake")  # agent names compare case-insensitively
    assert statuses(bridge, tokens) == {"leaked": 401, "same_agent": 401, "bystander": 200}

    # An agent's JWT cannot lift (or read) the list over the bridge; only the operator can.
    status, _, body = bridge.tool("revoke_token", {"agent": "BlueLake", "undo": True}, tokens["bystander"])
    assert status == 200
    assert body["result"]["isError"] is True
    assert body["result"]["structuredContent"]["error"]["code"] == "AUTHENTICATION_REQUIRED"

    mailbox.stop()
    bridge = start_bridge(mailbox, JWT)
    assert statuses(bridge, tokens) == {"leaked": 401, "same_agent": 401, "bystander": 200}
    listed = json.loads(mailbox.mailctl("http", "revoked", "--json").stdout)
    assert [(e["kind"], e["value"], e["reason"]) for e in listed["revoked"]] == [
        ("jti", "jti-leaked", "pasted in a CI log"), ("agent", "bluelake", "")]
    table = mailbox.mailctl("http", "revoked").stdout
    assert "jti-leaked" in table
    assert "pasted in a CI log" in table

    undone = revoke(mailbox, "--agent", "BlueLake", "--undo")
    assert undone["unrevoked"] == [{"kind": "agent", "value": "bluelake"}]
    assert statuses(bridge, tokens) == {"leaked": 401, "same_agent": 200, "bystander": 200}
    health = mailbox.call("health_check")
    assert health["http"]["revoked_tokens"]["revoked"] == 1
    assert health["http"]["revoked_tokens"]["refused"] == 3  # since this daemon started

    nothing = mailbox.mailctl("http", "revoke", check=False)
    assert nothing.returncode != 0
    assert "--jti" in nothing.stderr
    mailbox.stop()


@pytest.mark.timeout(900)  # on a fresh machine the fixture may first apt-get install redis-server
@pytest.mark.parametrize("backend", ["trio"])
def test_bridges_on_one_redis_share_revocations(mailbox: Mailbox, tmp_path: Path, redis_url: str) -> None:
    config = JWT + f'http_rate_limit_backend = "redis"\nhttp_rate_limit_redis_url = "{redis_url}"\n'
    first = start_bridge(mailbox, config)
    other_box = Mailbox(git_init(tmp_path / "second"), mailbox.backend)
    try:
        second = start_bridge(other_box, config)
        leaked = token({"jti": "jti-shared", "agent": "RedFox", "role": "writer"})
        assert [b.tool("health_check", {}, leaked)[0] for b in (first, second)] == [200, 200]
        revoke(mailbox, "--jti", "jti-shared")
        assert first.tool("health_check", {}, leaked)[0] == 401
        deadline = time.monotonic() + 15  # the other bridge reads Redis every second
        while second.tool("health_check", {}, leaked)[0] != 401:
            assert time.monotonic() < deadline, "the second bridge never saw the revocation"
            time.sleep(0.1)
        shared = json.loads(other_box.mailctl("http", "revoked", "--json").stdout)
        assert shared["shared"] is True
        assert [e["value"] for e in shared["revoked"]] == ["jti-shared"]
        # A daemon restarted on the other side still refuses it (Redis holds the list).
        other_box.stop()
        second = start_bridge(other_box, config)
        deadline = time.monotonic() + 15
        while second.tool("health_check", {}, leaked)[0] != 401:
            assert time.monotonic() < deadline, "the restarted bridge did not load the shared list"
            time.sleep(0.1)
    finally:
        other_box.stop()
        mailbox.stop()
