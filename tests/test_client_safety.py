"""The client talks only to its own daemon, never sends what maild would refuse, and never waits forever.

Issue 13 items 2 and 6: another local user's `.mcp_mail` (0777, with a listener in it) must get
nothing — not the hello with the agent's token; a 6 MB request is refused before it is sent; an
`id: null` error is the answer; a daemon that stops answering is a timeout, not a hang.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.client import DaemonClient, try_connect
from shared.errors import DaemonUnavailable, InvalidArgument, ProtocolError, UnsafeStateDir
from shared.protocol import MAX_FRAME_BYTES
from tests.conftest import Mailbox, git_init
from tests.test_shim import rpc, start_raw_shim, wait_exit

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="making files another user owns needs root")

LISTENER = r"""
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.bind(sys.argv[1]); sock.listen(1); sock.settimeout(30)
print("ready", flush=True)
try:
    conn, _ = sock.accept()
except TimeoutError:
    print(-1, flush=True); raise SystemExit
conn.settimeout(5)
received = b""
try:
    while chunk := conn.recv(65536):
        received += chunk
except TimeoutError:
    pass
print(len(received), flush=True)
"""


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailbox]:
    """One daemon for the module: these are client behaviours, the daemon's backend does not matter."""
    mailbox = Mailbox(git_init(tmp_path_factory.mktemp("safety") / "repo"), "asyncio")
    try:
        yield mailbox
    finally:
        mailbox.stop()


@pytest.fixture
def fresh(tmp_path: Path) -> Mailbox:
    """A root whose daemon never starts (the client refuses first)."""
    return Mailbox(git_init(tmp_path / "repo"), "asyncio")


@pytest.fixture
def foreign_listener() -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A process running as another user (nobody), listening on a socket it created."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("needs a system python3 that user nobody can run")
    scratch = Path(tempfile.mkdtemp(prefix="foreign-"))
    scratch.chmod(0o777)
    sock = scratch / "s.sock"
    proc = subprocess.Popen([python, "-c", LISTENER, str(sock)], user=NOBODY, group=NOBODY,
                            stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc, sock
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        shutil.rmtree(scratch, ignore_errors=True)


def bytes_received(proc: subprocess.Popen[str]) -> int:
    proc.kill()
    proc.wait()
    assert proc.stdout is not None
    out = proc.stdout.read().split()
    return int(out[0]) if out else 0


@needs_root
def test_a_state_dir_owned_by_another_user_gets_nothing(
    fresh: Mailbox, foreign_listener: tuple[subprocess.Popen[str], Path]
) -> None:
    listener, sock = foreign_listener
    state = fresh.paths.state_dir
    state.mkdir()
    state.chmod(0o777)
    os.chown(state, NOBODY, NOBODY)
    sock.rename(fresh.paths.socket)  # the other user's listener, where our daemon's socket belongs
    try:
        run = fresh.mailctl("call", "health_check", check=False)
        assert run.returncode == 3, run
        assert "Traceback" not in run.stderr
        assert run.stderr.strip().splitlines() == [run.stderr.strip()]
        assert "UNSAFE_STATE_DIR" in run.stderr
        assert "belongs to nobody (uid 65534)" in run.stderr
        assert bytes_received(listener) <= 0, "no hello, no token, no mail"
    finally:
        fresh.paths.socket.unlink(missing_ok=True)
        os.chown(state, 0, 0)
        state.chmod(0o700)


@needs_root
def test_a_listener_running_as_another_user_is_refused_after_connecting(
    fresh: Mailbox, foreign_listener: tuple[subprocess.Popen[str], Path]
) -> None:
    listener, sock = foreign_listener
    fresh.paths.state_dir.mkdir(mode=0o700)
    os.chown(sock, os.geteuid(), os.getegid())  # the files look like ours: only SO_PEERCRED can tell
    sock.rename(fresh.paths.socket)
    try:
        with pytest.raises(UnsafeStateDir, match="runs as uid 65534"):
            DaemonClient(fresh.paths, hello={"session": "s", "token": "secret"})
        assert bytes_received(listener) == 0, "the hello with the token was never sent"
    finally:
        fresh.paths.socket.unlink(missing_ok=True)


def test_a_group_writable_socket_is_refused(box: Mailbox) -> None:
    box.call("health_check")
    box.paths.socket.chmod(0o666)
    with pytest.raises(UnsafeStateDir, match="writable by other users"):
        try_connect(box.paths.socket)
    box.paths.socket.chmod(0o600)


def test_an_oversized_request_is_refused_before_sending_and_the_connection_lives(box: Mailbox) -> None:
    body = "x" * (MAX_FRAME_BYTES + 1024)
    with box.client() as conn:
        with pytest.raises(InvalidArgument, match="at most 4,194,304 bytes"):
            conn.call_tool("send_message", {"project_key": "p", "to": "A", "subject": "s", "body_md": body})
        assert conn.call_tool("health_check")["status"] == "ok"


def test_an_id_null_error_is_the_answer(box: Mailbox) -> None:
    with box.client() as conn:
        conn._sock.sendall(b"{" + b" " * (MAX_FRAME_BYTES + 10) + b"}\n")  # what an older client sent
        with pytest.raises(ProtocolError, match="frame exceeds"):
            conn.request("tools/list", timeout=60)
        assert conn.call_tool("health_check")["status"] == "ok"


def test_a_daemon_that_does_not_answer_is_a_timeout_not_a_hang(box: Mailbox) -> None:
    pid = box.call("health_check")["pid"]
    with box.client() as conn:
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(DaemonUnavailable, match=r"did not answer tools/call within 0\.5 s"):
                conn.request("tools/call", {"name": "health_check", "arguments": {}}, timeout=0.5)
        finally:
            os.kill(pid, signal.SIGCONT)


def test_the_shim_answers_an_oversized_request_with_its_id(box: Mailbox) -> None:
    proc = start_raw_shim(box)
    big = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
           "params": {"name": "health_check", "arguments": {"pad": "x" * (MAX_FRAME_BYTES + 1)}}}
    reply = rpc(proc, big)
    assert reply is not None
    assert reply["error"]["code"] == -32600
    assert "put large content in a file" in reply["error"]["message"]
    ok = rpc(proc, {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "health_check",
                                                                                  "arguments": {}}})
    assert ok is not None
    assert "result" in ok
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.close()
    assert wait_exit(proc) == 0
    proc.stdout.close()

