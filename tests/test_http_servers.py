"""The bridge's HTTP server per backend (maild/transport/http/server.py, uvicorn_runner.py): uvicorn +
httptools on asyncio, hypercorn on trio or with HTTP_SERVER=hypercorn. Through each: stateless calls
on one kept-alive connection, a HEAD answer, the web mailbox's SSE stream delivering a change, and a
graceful stop (SIGTERM) while that stream is still open; a request head past 16 KiB is refused.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from typing import Any

import jwt
import pytest

from shared.client import stop_daemon
from tests.conftest import Mailbox
from tests.test_http import start_bridge
from tests.test_web import EventReader

SECRET = "a-server-test-secret-that-is-long-enough-for-hs256"
BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "health_check", "arguments": {}}})


def bearer(**claims: Any) -> str:
    return jwt.encode({"sub": "ops", "role": "writer", "exp": int(time.time()) + 600, **claims}, SECRET)


def endless_head(port: int) -> bytes:
    """What the bridge answers a request whose headers never end (256 KiB of one header)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # the server may close before all of it is sent
            sock.sendall(b"GET /health/liveness HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 262144)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
        return answer


def bridge_line(mailbox: Mailbox) -> str:
    lines = [line for line in mailbox.paths.log_file.read_text().splitlines() if "HTTP bridge on http" in line]
    assert lines, "the daemon logs which server runs its bridge"
    return lines[-1]


@pytest.mark.parametrize("server", ["auto", "hypercorn"])
def test_each_backend_serves_the_bridge_on_its_server_streams_and_stops_gracefully(
        mailbox: Mailbox, server: str) -> None:
    if mailbox.backend == "trio" and server == "hypercorn":
        pytest.skip("on trio, auto is hypercorn already")
    bridge = start_bridge(mailbox, f'http_server = "{server}"\nhttp_jwt_enabled = true\nhttp_jwt_secret = "{SECRET}"\n')
    uvicorn = mailbox.backend == "asyncio" and server == "auto"
    assert ("(uvicorn, httptools)" if uvicorn else "(hypercorn)") in bridge_line(mailbox)

    conn = http.client.HTTPConnection("127.0.0.1", bridge.port, timeout=30)
    headers = {"Content-Type": "application/json", "Accept": "application/json",
               "Authorization": f"Bearer {bearer()}"}
    try:
        first = None
        for _ in range(3):  # one connection, kept alive between calls
            conn.request("POST", "/mcp/", body=BODY, headers=headers)
            response = conn.getresponse()
            answer = json.loads(response.read())
            assert response.status == 200
            assert answer["result"]["structuredContent"]["status"] == "ok"
            first = first or conn.sock
            assert conn.sock is first
        conn.request("HEAD", "/health/liveness")  # no body: the held headers must still leave
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b""
    finally:
        conn.close()

    assert endless_head(bridge.port).startswith(b"HTTP/1.1 4")  # 400 or 431, then the connection closes

    reader = EventReader(bridge.port, {}, extra={"Authorization": f"Bearer {bearer(role='reader')}"})
    try:
        mailbox.call("ensure_project", human_key="/work/servers")
        deadline = time.monotonic() + 10
        while not reader.events and time.monotonic() < deadline:
            time.sleep(0.02)
        assert reader.events, "a change reaches the open SSE stream"
        # SIGTERM with the stream open: the bridge ends it within its grace period and the daemon
        # exits (stop_daemon raises if that takes longer than the timeout).
        assert stop_daemon(mailbox.paths, timeout=10)
        reader.thread.join(5)
        assert not reader.thread.is_alive(), "the stream ended when the daemon stopped"
    finally:
        reader.close()
