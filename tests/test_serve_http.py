"""`mailctl serve-http` and the bridge's life in the daemon (issue 13 item 4), with real processes.

A port someone else holds (any program, or another maild) is a failed bridge with a clear error,
reported at once; the daemon keeps serving its socket. Success means the liveness answer carries
*this* daemon's instance id. `daemon status` shows the bridge, `daemon restart` keeps it, and
`--foreground` runs maild in the terminal.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Mailbox, git_init
from tests.test_http import free_port, wait_for_bridge

pytestmark = pytest.mark.slow  # several daemon starts per test


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port a plain (non-maild) program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def serve_http(mailbox: Mailbox, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in mailbox.env.items() if not k.startswith(("HTTP_", "AGENT_MAIL_HTTP"))}
    return subprocess.run([sys.executable, "-P", "-m", "mailctl", "serve-http", *args], env={**clean, **(env or {})},
                          cwd=mailbox.root, capture_output=True, text=True, check=False, timeout=90)


def status_json(mailbox: Mailbox) -> dict[str, object]:
    return json.loads(mailbox.mailctl("daemon", "status", "--json").stdout)  # type: ignore[no-any-return]


def test_a_port_held_by_another_program_fails_the_bridge_not_the_daemon(mailbox: Mailbox, held_port: int) -> None:
    if mailbox.backend != "asyncio":
        pytest.skip("the bind check runs before hypercorn, on either backend alike")
    run = serve_http(mailbox, "--port", str(held_port))
    assert run.returncode == 3, run
    [line] = run.stderr.strip().splitlines()
    assert "the HTTP bridge could not start" in line
    assert f"cannot listen on 127.0.0.1:{held_port}" in line
    assert "keeps serving the Unix socket" in line
    status = status_json(mailbox)
    assert status["running"] is True, "mail stays up when the bridge cannot bind"
    assert status["http"]["state"] == "failed"  # type: ignore[index]
    human = mailbox.mailctl("daemon", "status").stdout
    assert "HTTP bridge: FAILED: cannot listen" in human
    assert mailbox.call("health_check")["status"] == "ok"


def test_serve_http_then_status_and_restart_keep_the_bridge(mailbox: Mailbox, tmp_path: Path) -> None:
    if mailbox.backend != "asyncio":
        pytest.skip("the CLI's output does not depend on the daemon's backend")
    port = free_port()
    run = serve_http(mailbox, "--port", str(port))
    assert run.returncode == 0, run
    assert f"HTTP bridge serving at http://127.0.0.1:{port}/mcp/ (auth: none configured)" in run.stdout
    assert "no authentication configured" in run.stderr, "every request would get 401: say so"
    assert "{" not in run.stdout, "people get sentences, not JSON"
    first = mailbox.status()
    assert first is not None
    assert "HTTP bridge: serving at" in mailbox.mailctl("daemon", "status").stdout
    restarted = json.loads(mailbox.mailctl("daemon", "restart", "--json").stdout)
    assert restarted["pid"] != first["pid"]
    assert restarted["http"]["state"] == "serving"
    assert restarted["http"]["port"] == port
    assert restarted["http"]["auth"] == []
    # Another mailbox's serve-http on this port: our maild answers there, which must not pass for its own.
    other = Mailbox(git_init(tmp_path / "other"), "asyncio")
    try:
        taken = serve_http(other, "--port", str(port))
        assert taken.returncode == 3, taken
        assert "the HTTP bridge could not start" in taken.stderr
        assert status_json(other)["running"] is True, "its mail stays up too"
    finally:
        other.stop()


def test_foreground_runs_maild_in_this_process(mailbox: Mailbox, held_port: int) -> None:
    if mailbox.backend != "asyncio":
        pytest.skip("one backend is enough for the CLI's foreground mode")
    port = free_port()
    clean = {k: v for k, v in mailbox.env.items() if not k.startswith(("HTTP_", "AGENT_MAIL_HTTP"))}
    proc = subprocess.Popen([sys.executable, "-P", "-m", "mailctl", "serve-http", "--foreground", "--port", str(port)],
                            env=clean, cwd=mailbox.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_bridge(port)
        deadline = time.monotonic() + 10
        while (mailbox.status() or {}).get("pid") != proc.pid:
            assert time.monotonic() < deadline, "the foreground process is the daemon"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr.decode()[-500:]
    taken = serve_http(mailbox, "--foreground", "--port", str(held_port))
    assert taken.returncode == 2
    assert taken.stderr.strip().splitlines()[-1].startswith("maild: the HTTP bridge could not start")
