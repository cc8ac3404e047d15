"""Abuse of the socket (issue 13, items 1 and 9): the daemon stays small, answers others, keeps the
connection, and refuses malformed values with INVALID_ARGUMENT, on the lean and the SDK path.

One daemon per backend for the whole module.
"""

from __future__ import annotations

import json
import os
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.client import DaemonClient, ensure_started, envelope_meta, stop_daemon
from shared.paths import MailboxPaths, read_status
from tests.conftest import BACKENDS, git_init

PIPELINE_FRAMES = 60_000
TOKENS: dict[Path, str] = {}


@pytest.fixture(scope="module", params=BACKENDS)
def paths(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailboxPaths]:
    box = MailboxPaths(git_init(tmp_path_factory.mktemp(f"hardening-{request.param}") / "repo"))
    previous = os.environ.get("AGENT_MAIL_BACKEND")
    os.environ["AGENT_MAIL_BACKEND"] = str(request.param)
    try:
        ensure_started(box)
    finally:
        if previous is None:
            os.environ.pop("AGENT_MAIL_BACKEND", None)
        else:
            os.environ["AGENT_MAIL_BACKEND"] = previous
    with DaemonClient(box) as setup:
        bob = setup.call_tool("register_agent", {"project_key": "/h", "program": "t", "model": "m", "name": "HardBob"})
    TOKENS[box.root] = bob["registration_token"]
    try:
        yield box
    finally:
        stop_daemon(box, force=True)


class Raw:
    def __init__(self, paths: MailboxPaths, *, fast_path: bool = True, as_bob: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(str(paths.socket))
        self.reader = self.sock.makefile("rb")
        hello: dict[str, Any] = {"client": "hardening", "fast_path": fast_path}
        if as_bob:  # bound to HardBob, so every value reaches the service that stores it
            hello.update(agent="HardBob", token=TOKENS[paths.root])
        self.send(json.dumps({"jsonrpc": "2.0", "method": "maild/hello", "params": hello}).encode() + b"\n")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, request_id: int, tool: str, arguments: dict[str, Any] | str) -> dict[str, Any]:
        args = arguments if isinstance(arguments, str) else json.dumps(arguments)
        meta = json.dumps(envelope_meta())
        self.send(f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call","params":{{"name":"{tool}",'
                  f'"arguments":{args},"_meta":{meta}}}}}\n'.encode())
        return self.receive()

    def receive(self) -> dict[str, Any]:
        line = self.reader.readline()
        assert line, "the daemon closed the connection"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def health(paths: MailboxPaths) -> None:
    with DaemonClient(paths) as other:
        assert other.call_tool("health_check")["status"] == "ok"


@pytest.mark.parametrize("fast_path", [True, False], ids=["lean", "sdk"])
def test_a_client_that_pipelines_without_reading_is_throttled_and_the_memory_comes_back(
    paths: MailboxPaths, fast_path: bool
) -> None:
    pid = int((read_status(paths) or {})["pid"])
    health(paths)
    baseline = rss_mb(pid)
    params = {"name": "health_check", "arguments": {}, "_meta": envelope_meta()}
    frame = (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}) + "\n").encode()
    greedy = Raw(paths, fast_path=fast_path)
    greedy.sock.setblocking(False)
    pending = frame * PIPELINE_FRAMES
    stalled = False
    while pending:
        _, writable, _ = select.select([], [greedy.sock], [], 3.0)
        if not writable:
            stalled = True  # the daemon stopped reading from a client that does not read
            break
        try:
            sent = greedy.sock.send(pending[:262144])
        except BlockingIOError:
            continue
        pending = pending[sent:]
    during = rss_mb(pid)
    started = time.monotonic()
    health(paths)  # another client is still served promptly (no assertion on time: see tests/bench)
    waited = time.monotonic() - started
    greedy.sock.close()
    greedy.reader.close()
    health(paths)
    after = rss_mb(pid)
    print(f"RSS baseline {baseline:.0f} MB, during {during:.0f} MB, after close {after:.0f} MB; "
          f"other client's health_check {waited * 1000:.0f} ms")
    assert stalled, "the daemon kept reading 60,000 requests nobody was reading the answers of"
    assert during < baseline + 60
    assert after < baseline + 60


def test_deep_json_nesting_is_a_parse_error_and_the_connection_lives(paths: MailboxPaths) -> None:
    conn = Raw(paths)
    try:
        conn.send(b"[" * 1000 + b"\n")
        assert conn.receive()["error"]["code"] == -32700
        conn.send(b'{"a":' * 2000 + b"1" + b"}" * 2000 + b"\n")
        assert conn.receive()["error"]["code"] == -32700
        deep = "[" * 200 + "]" * 200
        answer = conn.call(2, "send_message", f'{{"project_key":"/h","to":"HardBob","subject":{deep},"body_md":"x"}}')
        assert answer["result"]["structuredContent"]["error"]["code"] == "INVALID_ARGUMENT"
        assert conn.call(3, "health_check", {})["result"]["structuredContent"]["status"] == "ok"
    finally:
        conn.close()


@pytest.mark.parametrize("fast_path", [True, False], ids=["lean", "sdk"])
def test_malformed_values_are_invalid_arguments_not_internal_errors(paths: MailboxPaths, fast_path: bool) -> None:
    conn = Raw(paths, fast_path=fast_path, as_bob=True)
    try:
        cases = [
            ("send_message", '{"project_key":"/h","to":"HardBob","subject":"\\ud800","body_md":"x"}'),
            ("send_message", '{"project_key":"/h","to":"HardBob","subject":"ok","body_md":"a\\udfffb"}'),
            ("mark_message_read", json.dumps({"project_key": "/h", "agent_name": "HardBob", "message_id": 2**63})),
            ("mark_message_read", json.dumps({"project_key": "/h", "agent_name": "HardBob", "message_id": -(2**64)})),
            ("file_reservation_paths", json.dumps({"project_key": "/h", "agent_name": "HardBob",
                                                   "paths": ["src/\u0000x"]})),
            ("file_reservation_paths", json.dumps({"project_key": "/h", "agent_name": "HardBob",
                                                   "paths": ["src/\u0007*.py"]})),
            ("file_reservation_paths", json.dumps({"project_key": "/h", "agent_name": "HardBob",
                                                   "paths": ["src/a\nb"]})),
        ]
        for n, (tool, arguments) in enumerate(cases, start=10):
            answer = conn.call(n, tool, arguments)
            assert answer["id"] == n
            error = answer["result"]["structuredContent"]["error"]
            assert error["code"] == "INVALID_ARGUMENT", (tool, arguments, error)
        # A lone surrogate where no argument validation looks (the id, the tool name) still gets an answer.
        conn.send(b'{"jsonrpc":"2.0","id":"\\ud800","method":"tools/call","params":{"name":"x\\udc00",'
                  b'"arguments":{},"_meta":' + json.dumps(envelope_meta()).encode() + b"}}\n")
        assert "error" in conn.receive()
        assert conn.call(99, "health_check", {})["result"]["structuredContent"]["status"] == "ok"
    finally:
        conn.close()
