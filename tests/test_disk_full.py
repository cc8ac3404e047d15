"""A full disk (issue 13 item 3), on a real full filesystem: a small tmpfs mounted for the test.

Writes fail with STORAGE_ERROR and a message saying what to do; a hello whose write fails gets a
JSON-RPC error instead of a dropped connection; closing a session whose presence cannot be written
does not take the daemon down; writes resume once there is room; and a daemon that cannot start
on a full disk tells the client why, in full.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.client import DaemonClient
from shared.errors import StorageError
from shared.paths import pid_alive
from tests.conftest import Mailbox, git_init
from tests.diskfull import fill, free, mount_tmpfs, unmount

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Mailbox, Path]]:
    mountpoint = tmp_path / "fs"
    if not mount_tmpfs(mountpoint):
        pytest.skip("cannot mount a small tmpfs here (needs root or a user namespace): no real full disk")
    monkeypatch.setenv("AGENT_MAIL_BACKEND", backend)
    box = Mailbox(git_init(mountpoint / "repo"), backend)
    filler_dir = mountpoint / "filler"
    filler_dir.mkdir()
    try:
        yield box, filler_dir
    finally:
        free(filler_dir)
        box.stop()
        unmount(mountpoint)


def send(conn: DaemonClient, i: int) -> None:
    conn.call_tool("send_message", {"project_key": "/p", "to": "GreenCastle", "subject": f"m{i}",
                                    "body_md": "x" * 2000})


def test_a_full_disk_fails_writes_cleanly_and_the_daemon_recovers(small_disk: tuple[Mailbox, Path]) -> None:
    box, filler = small_disk
    me = box.client(hello={"session": "sender", "client": "test", "pid": 1})
    me.call_tool("register_agent", {"project_key": "/p", "program": "x", "model": "y", "name": "BlueLake"})
    with box.client() as other:
        other.call_tool("register_agent", {"project_key": "/p", "program": "x", "model": "y", "name": "GreenCastle"})
    pid = me.call_tool("health_check")["pid"]
    fill(filler)
    with pytest.raises(StorageError, match="is full") as failed:  # noqa: PT012 - sends until the WAL cannot grow
        for i in range(10_000):
            send(me, i)
    assert failed.value.recoverable
    fill(filler)  # whatever the failed write left free

    # A new client's hello cannot be written: it gets an error it can show, not a dropped connection.
    newcomer = box.client(hello={"session": "newcomer", "client": "test", "pid": 2})
    with pytest.raises(StorageError, match="is full"):
        newcomer.call_tool("health_check")
    newcomer.close()  # its presence cannot be written either: the daemon must live on
    me.close()
    time.sleep(0.5)  # let the daemon handle both closes
    with box.client() as probe:
        assert probe.call_tool("health_check")["pid"] == pid
    assert pid_alive(pid)

    free(filler)
    with box.client(hello={"session": "sender", "client": "test", "pid": 1}) as again:
        send(again, -1)  # room again: writes resume without a restart
        assert again.call_tool("health_check")["pid"] == pid


def test_a_daemon_that_cannot_start_on_a_full_disk_says_why(small_disk: tuple[Mailbox, Path]) -> None:
    box, filler = small_disk
    if box.backend != "asyncio":
        pytest.skip("start-up happens before the event loop: one backend is enough")
    box.call("health_check")
    box.stop()
    fill(filler)
    run = box.mailctl("call", "health_check", check=False)
    assert run.returncode == 3, run
    assert "Traceback" not in run.stderr
    [line] = run.stderr.strip().splitlines()
    assert "maild failed to start" in line
    assert "No space left on device" in line or "is full" in line, line
    assert box.paths.db.exists(), "nothing was reset"
