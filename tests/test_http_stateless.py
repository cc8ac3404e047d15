"""The bridge is stateless by default, as upstream (issue 15), and keeps identities apart (issue 13, item 5).

A bare POST of `tools/call` — no initialize, no session id, no 2026-07-28 envelope — answers JSON
through the lean dispatcher; a client that initialises still gets a session and the same answers.
Sessions and rate-limit buckets are keyed by how the caller authenticated plus its subject.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

from tests.conftest import Mailbox
from tests.test_http import SECRET, start_bridge, token

ADMIN = "admin-static-token"
CONFIG = f'http_bearer_token = "{ADMIN}"\nhttp_jwt_enabled = true\nhttp_jwt_secret = "{SECRET}"\n'
PROJECT = "/work/stateless"


def post(port: int, frame: dict[str, Any], bearer: str, session: str | None = None,
         extra: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """A plain POST as a curl hook sends it: only Content-Type and Authorization (plus a session if given)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {bearer}", **(extra or {})}
    if session is not None:
        headers["Mcp-Session-Id"] = session
        headers["Accept"] = "application/json, text/event-stream"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/mcp/", body=json.dumps(frame), headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(raw) if raw else None
    finally:
        conn.close()


def call(name: str, arguments: dict[str, Any], request_id: int = 1) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def initialize(port: int, bearer: str) -> str:
    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
    frame = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}
    status, headers, body = post(port, frame, bearer, extra={"Accept": "application/json, text/event-stream"})
    assert status == 200, body
    session = headers["mcp-session-id"]
    notified = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert post(port, notified, bearer, session=session)[0] == 202
    return session


def test_a_bare_tools_call_post_works_and_an_initialised_client_gets_a_session_with_the_same_answers(
    mailbox: Mailbox,
) -> None:
    bridge = start_bridge(mailbox, CONFIG)
    status, _, body = post(bridge.port, call("health_check", {}), ADMIN)
    assert status == 200, body
    assert body["result"]["structuredContent"]["status"] == "ok"

    session = initialize(bridge.port, ADMIN)
    cases = [
        {"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {}},
        call("no_such_tool", {}, 6),
        call("whois", {"bogus": 1}, 7),
        call("ensure_project", {"human_key": PROJECT}, 8),
        {"jsonrpc": "2.0", "id": 9, "method": "resources/read", "params": {"uri": "resource://projects"}},
    ]
    for frame in cases:
        stateless = post(bridge.port, frame, ADMIN)
        stateful = post(bridge.port, frame, ADMIN, session=session)
        assert stateless[0] == stateful[0] == 200
        assert stateless[2] == stateful[2], frame


def test_a_jwt_whose_sub_is_bearer_is_not_the_static_token(mailbox: Mailbox) -> None:
    bridge = start_bridge(mailbox, CONFIG + "http_rate_limit_enabled = true\nhttp_rate_limit_tools_per_minute = 2\n")
    registered = post(bridge.port, call("register_agent", {"project_key": PROJECT, "program": "p", "model": "m",
                                                           "name": "AdminAgent"}), ADMIN)
    assert registered[0] == 200, registered
    with mailbox.client() as sender:  # one session: registering binds it to Sender
        sender.call_tool("register_agent", {"project_key": PROJECT, "program": "p", "model": "m", "name": "Sender"})
        sender.call_tool("send_message", {"project_key": PROJECT, "to": "AdminAgent", "subject": "secret",
                                          "body_md": "for the admin only"})
    admin_inbox = post(bridge.port, call("fetch_inbox", {"project_key": PROJECT}), ADMIN)[2]
    assert admin_inbox["result"]["structuredContent"]["result"][0]["subject"] == "secret"

    impostor = token({"sub": "bearer", "role": "reader"})
    status, _, body = post(bridge.port, call("fetch_inbox", {"project_key": PROJECT}), impostor)
    assert status == 200
    assert "secret" not in json.dumps(body), "a JWT with sub=bearer read the static token's bound agent's mail"
    # Separate buckets too: the impostor spending its budget leaves the admin's alone.
    while post(bridge.port, call("health_check", {}), impostor)[0] != 429:
        pass
    assert post(bridge.port, call("health_check", {}), ADMIN)[0] == 200
