"""The socket speaks newline-delimited JSON-RPC 2.0 (MCP); bad frames get errors, never a crash.

One daemon per backend serves the module: a bad frame must not hurt the daemon, so later tests on
the same daemon are part of the check."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from shared.client import envelope_meta
from shared.protocol import MAX_FRAME_BYTES
from tests.conftest import Mailbox


class RawConnection:
    def __init__(self, mailbox: Mailbox) -> None:
        mailbox.call("health_check")  # make sure the daemon is up
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(20)
        self.sock.connect(str(mailbox.paths.socket))
        self.reader = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_json(self, frame: dict[str, Any]) -> None:
        self.send(json.dumps(frame).encode() + b"\n")

    def receive(self) -> dict[str, Any]:
        line = self.reader.readline()
        assert line, "daemon closed the connection"
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.fixture
def mailbox(shared_mailbox: Mailbox) -> Mailbox:
    return shared_mailbox


@pytest.fixture
def raw(mailbox: Mailbox) -> Any:
    conn = RawConnection(mailbox)
    yield conn
    conn.close()


def modern_call(request_id: int, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments or {}, "_meta": envelope_meta()},
    }


def test_one_modern_frame_calls_a_tool_without_a_handshake(raw: RawConnection) -> None:
    raw.send_json(modern_call(7, "health_check"))
    reply = raw.receive()
    assert reply["id"] == 7
    assert reply["result"]["structuredContent"]["status"] == "ok"
    assert reply["result"]["isError"] is False


def test_legacy_handshake_then_tools_list(raw: RawConnection) -> None:
    raw.send_json(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "raw-test", "version": "0"},
            },
        }
    )
    init = raw.receive()
    assert init["result"]["serverInfo"]["name"] == "agent-mail"
    assert init["result"]["protocolVersion"] == "2025-11-25"
    raw.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
    raw.send_json({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}})
    tools = {tool["name"]: tool for tool in raw.receive()["result"]["tools"]}
    assert {"health_check", "ensure_project"} <= set(tools)
    schema = tools["ensure_project"]["inputSchema"]
    assert schema["required"] == ["human_key"]
    assert "title" not in json.dumps(schema), "schemas are compacted for token cost"
    assert tools["health_check"]["annotations"]["readOnlyHint"] is True


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"this is not json\n", -32700),
        (b"{\"unterminated\": \n", -32700),
        (b"\xff\xfe\x00garbage\n", -32700),
        (b"[1, 2, 3]\n", -32600),
        (b"{\"jsonrpc\": \"1.0\", \"id\": 5, \"method\": \"x\"}\n", -32600),
        (b"42\n", -32600),
    ],
)
def test_malformed_frames_get_errors_and_the_connection_lives_on(raw: RawConnection, frame: bytes, code: int) -> None:
    raw.send(frame)
    assert raw.receive()["error"]["code"] == code
    raw.send_json(modern_call(9, "health_check"))
    assert raw.receive()["result"]["structuredContent"]["status"] == "ok"


def test_an_oversized_frame_is_refused_and_the_next_frame_served(raw: RawConnection) -> None:
    raw.send(b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "pad": "' + b"x" * (MAX_FRAME_BYTES + 10) + b'"}\n')
    error = raw.receive()
    assert error["error"]["code"] == -32600
    assert "exceeds" in error["error"]["message"]
    raw.send_json(modern_call(2, "health_check"))
    assert raw.receive()["id"] == 2


def test_unknown_methods_and_tools_and_bad_params_are_errors(raw: RawConnection) -> None:
    raw.send_json({"jsonrpc": "2.0", "id": 1, "method": "no/such/method", "params": {"_meta": envelope_meta()}})
    assert raw.receive()["error"]["code"] == -32601
    raw.send_json(modern_call(2, "no_such_tool"))
    assert raw.receive()["error"]["code"] == -32602
    raw.send_json({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"_meta": envelope_meta()}})
    assert raw.receive()["error"]["code"] == -32602
    raw.send_json(modern_call(4, "ensure_project", {"human_key": 12}))
    reply = raw.receive()["result"]
    assert reply["isError"] is True
    assert reply["structuredContent"]["error"]["code"] == "INVALID_ARGUMENT"
    assert "human_key" in reply["structuredContent"]["error"]["message"]
    raw.send_json(modern_call(5, "health_check"))
    assert raw.receive()["result"]["structuredContent"]["status"] == "ok"


def test_hello_binds_session_facts_and_is_not_answered(mailbox: Mailbox, raw: RawConnection) -> None:
    raw.send_json(
        {"jsonrpc": "2.0", "method": "maild/hello",
         "params": {"session": "s-123", "pid": 4242, "ppid": 1, "cwd": "/x", "client": "shim"}}
    )
    raw.send_json(modern_call(1, "health_check"))
    reply = raw.receive()
    assert reply["id"] == 1, "the hello gets no reply; the first reply is the tool's"
    assert reply["result"]["structuredContent"]["sessions"]["by_client"].get("shim") == 1


def test_client_vanishing_mid_request_does_not_hurt_the_daemon(mailbox: Mailbox) -> None:
    for _ in range(20):
        conn = RawConnection(mailbox)
        conn.send(json.dumps(modern_call(1, "ensure_project", {"human_key": "/p"})).encode())  # no newline
        conn.send(b"\n" + json.dumps(modern_call(2, "health_check")).encode() + b"\n")
        conn.close()
    assert mailbox.call("health_check")["status"] == "ok"
    assert mailbox.call("ensure_project", human_key="/p")["slug"] == "p"


def test_a_client_that_half_closes_after_its_request_still_gets_the_answer(raw: RawConnection) -> None:
    """What `echo '{...}' | socat - UNIX-CONNECT:...` does: write, shut down writing, then read."""
    raw.send_json(modern_call(1, "ensure_project", {"human_key": "/half/closed"}))
    raw.sock.shutdown(socket.SHUT_WR)
    reply = raw.receive()
    assert reply["id"] == 1
    assert reply["result"]["structuredContent"]["slug"] == "half-closed"
