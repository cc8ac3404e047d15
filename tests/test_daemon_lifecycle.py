"""maild lifecycle, driven through real processes: start, stop, races, stale state, idle, fallback."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.client import DaemonClient, try_connect
from shared.paths import MailboxPaths, pid_alive
from tests.conftest import Mailbox, git_init


def wait_until(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def nobody_listens(path: Path) -> bool:
    sock = try_connect(path)
    if sock is None:
        return True
    sock.close()
    return False


def test_mailctl_daemon_start_status_restart_stop(mailbox: Mailbox) -> None:
    started = mailbox.mailctl("daemon", "start")
    assert "maild running" in started.stdout
    first_pid = mailbox.status()["pid"]  # type: ignore[index]
    status = json.loads(mailbox.mailctl("daemon", "status", "--json").stdout)
    assert status["running"] is True
    assert status["status"] == "ok"
    assert status["pid"] == first_pid
    mailbox.mailctl("daemon", "restart")
    second_pid = mailbox.status()["pid"]  # type: ignore[index]
    assert second_pid != first_pid
    assert not pid_alive(first_pid)
    assert "maild stopped" in mailbox.mailctl("daemon", "stop").stdout
    wait_until(lambda: not pid_alive(second_pid))
    assert mailbox.status() is None, "a clean shutdown removes the status file"
    assert not mailbox.paths.socket.exists(), "a clean shutdown unlinks the socket"
    stopped = mailbox.mailctl("daemon", "status", check=False)
    assert stopped.returncode == 3
    assert "not running" in stopped.stdout


@pytest.mark.parametrize("backend", ["trio"])  # fifty CLI processes racing to start it: the race is the client's
def test_fifty_concurrent_cold_calls_start_exactly_one_daemon(mailbox: Mailbox) -> None:
    def call(_: int) -> subprocess.CompletedProcess[str]:
        return mailbox.mailctl("call", "health_check", check=False, timeout=90)

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(call, range(50)))
    failures = [r.stderr for r in results if r.returncode != 0]
    assert not failures, failures[:3]
    pids = {json.loads(r.stdout)["pid"] for r in results}
    assert len(pids) == 1, f"expected one daemon, saw pids {pids}"
    assert pids == {mailbox.status()["pid"]}  # type: ignore[index]


def test_client_recovers_after_kill_9_leaves_stale_socket_and_status(mailbox: Mailbox) -> None:
    pid = mailbox.call("health_check")["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid))
    # A killed multi-threaded process can show as a zombie while its other threads still close
    # its files: wait for the listening socket to go, too.
    wait_until(lambda: nobody_listens(mailbox.paths.socket))
    assert mailbox.paths.socket.exists(), "kill -9 leaves the socket file behind"
    assert mailbox.status()["pid"] == pid  # type: ignore[index]
    recovered = mailbox.call("health_check")
    assert recovered["pid"] != pid
    assert mailbox.status()["pid"] == recovered["pid"]  # type: ignore[index]


def test_sigterm_shuts_down_cleanly_and_keeps_written_data(mailbox: Mailbox) -> None:
    mailbox.call("ensure_project", human_key="/srv/app")
    pid = mailbox.status()["pid"]  # type: ignore[index]
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid))
    assert mailbox.status() is None
    log = mailbox.paths.log_file.read_text()
    assert "received SIGTERM" in log
    assert "maild stopped" in log
    again = mailbox.call("ensure_project", human_key="/srv/app")
    assert again["id"] == 1


def test_long_root_path_falls_back_to_a_short_socket_path(tmp_path: Path, backend: str) -> None:
    deep = tmp_path
    while len(str(deep / ".mcp_mail" / "maild.sock")) <= 120:
        deep = deep / "a-rather-long-directory-name"
    box = Mailbox(git_init(deep), backend)
    try:
        report = box.call("health_check")
        assert report["status"] == "ok"
        status = box.status()
        assert status is not None
        assert len(os.fsencode(status["socket"])) <= 103
        assert status["socket"] == str(box.paths.socket)
        assert not status["socket"].startswith(str(deep))
        mode = stat.S_IMODE(Path(status["socket"]).parent.stat().st_mode)
        assert mode == 0o700
    finally:
        box.stop()


def test_socket_and_state_dir_are_private(mailbox: Mailbox) -> None:
    mailbox.call("health_check")
    assert stat.S_IMODE(mailbox.paths.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(mailbox.paths.socket.stat().st_mode) == 0o600


def test_state_dir_is_excluded_from_the_user_repository(mailbox: Mailbox) -> None:
    mailbox.call("health_check")
    exclude = (mailbox.root / ".git" / "info" / "exclude").read_text()
    assert "/.mcp_mail/" in exclude
    (mailbox.root / "tracked.txt").write_text("x")
    porcelain = subprocess.run(
        ["git", "-C", str(mailbox.root), "status", "--porcelain"], capture_output=True, text=True, check=True
    ).stdout
    assert ".mcp_mail" not in porcelain
    assert "tracked.txt" in porcelain


def test_idle_daemon_shuts_itself_down(mailbox: Mailbox) -> None:
    mailbox.paths.state_dir.mkdir(mode=0o700)
    mailbox.paths.config_file.write_text("idle_timeout_seconds = 0.5\n")
    pid = mailbox.call("health_check")["pid"]
    wait_until(lambda: not pid_alive(pid), timeout=20)
    assert "idle for" in mailbox.paths.log_file.read_text()


def test_an_open_connection_keeps_the_daemon_alive(mailbox: Mailbox) -> None:
    mailbox.paths.state_dir.mkdir(mode=0o700)
    mailbox.paths.config_file.write_text("idle_timeout_seconds = 0.3\n")
    with mailbox.client() as conn:
        pid = conn.call_tool("health_check")["pid"]
        time.sleep(1.0)  # longer than the idle timeout, with a connection open
        assert pid_alive(pid)
        assert conn.call_tool("health_check")["pid"] == pid


def test_shared_user_level_root_works(tmp_path: Path, backend: str) -> None:
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "xdg"), AGENT_MAIL_ROOT="user", AGENT_MAIL_BACKEND=backend)
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "mailctl", "call", "health_check"],
        env=env, cwd=outside, capture_output=True, text=True, timeout=60, check=False,
    )
    try:
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["root"] == str(tmp_path / "xdg" / "agent-mail")
    finally:
        subprocess.run([sys.executable, "-m", "mailctl", "daemon", "stop", "--force"], env=env, cwd=outside,
                       capture_output=True, check=False, timeout=30)


def test_second_daemon_for_the_same_root_exits_without_harm(mailbox: Mailbox) -> None:
    pid = mailbox.call("health_check")["pid"]
    rival = subprocess.run(
        [sys.executable, "-m", "maild", "--root", str(mailbox.root)],
        capture_output=True, text=True, timeout=30, check=False, env=mailbox.env,
    )
    assert rival.returncode == 0
    assert "already serves" in rival.stderr
    assert mailbox.call("health_check")["pid"] == pid


def test_client_without_autostart_reports_daemon_unavailable(tmp_path: Path) -> None:
    from shared.errors import DaemonUnavailable

    with pytest.raises(DaemonUnavailable, match="not running"):
        DaemonClient(MailboxPaths(git_init(tmp_path / "r")), autostart=False)
    # Raw connect on a missing socket is just "nobody listens".
    assert try_connect(tmp_path / "nope.sock") is None
    s = socket.socket(socket.AF_UNIX)
    s.close()


def test_logs_can_be_json_lines(mailbox: Mailbox) -> None:
    mailbox.paths.state_dir.mkdir(mode=0o700)
    mailbox.paths.config_file.write_text("log_json = true\n")
    mailbox.call("health_check")
    mailbox.stop()
    entries = [json.loads(line) for line in mailbox.paths.log_file.read_text().splitlines() if line.startswith("{")]
    messages = [entry["msg"] for entry in entries]
    assert any(message.startswith("maild 0.1.0 ready") for message in messages)
    assert all({"ts", "level", "logger", "msg"} <= set(entry) for entry in entries)


def test_folders_named_like_our_packages_in_the_repo_do_not_shadow_them(mailbox: Mailbox) -> None:
    for name in ("shared", "maild", "mailctl"):
        (mailbox.root / name).mkdir()
        (mailbox.root / name / "__init__.py").write_text("raise ImportError('the user repo shadowed us')\n")
    assert mailbox.mailctl("call", "health_check").returncode == 0
