"""The archive mirrored to a git server: a bare repository on disk and `git daemon` on loopback.

Pushes arrive after group commits, a lost machine rebuilds an identical database from the mirror
(`mailctl doctor --rebuild --from URL`), a diverged mirror is reported and never forced, and
`mailctl archive clone|checkout` give readable working copies."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Mailbox, git_init
from tests.test_http import free_port

PROJECT = "/work/app"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def configure(mailbox: Mailbox, remote: str) -> None:
    mailbox.paths.state_dir.mkdir(mode=0o700, exist_ok=True)
    mailbox.paths.config_file.write_text(f'archive_remote = "{remote}"\narchive_push_interval_seconds = 0.1\n')


def converse(mailbox: Mailbox, subject: str) -> dict[str, str]:
    """Two agents and a message between them; their registration tokens by name."""
    tokens = {name: mailbox.call("register_agent", project_key=PROJECT, program="p", model="m",
                                 name=name)["registration_token"] for name in ("BlueLake", "GreenCastle")}
    mailbox.call("send_message", project_key=PROJECT, sender_name="BlueLake", sender_token=tokens["BlueLake"],
                 to=["GreenCastle"], subject=subject, body_md=f"body of {subject}")
    return tokens


def mirrored(mailbox: Mailbox, timeout: float = 30) -> dict[str, Any]:
    """Wait until the archive's queue is drained and the mirror holds its head; the mirror report."""
    deadline = time.monotonic() + timeout
    while True:
        archive = mailbox.call("health_check")["archive"]
        mirror = archive["mirror"]
        head = subprocess.run(["git", "--git-dir", str(mailbox.paths.archive), "rev-parse", "-q", "--verify",
                               "refs/heads/main"], capture_output=True, text=True, check=False).stdout.strip()
        if archive.get("queue_depth") == 0 and head and mirror["pushed_head"] == head:
            return dict(mirror)
        assert time.monotonic() < deadline, f"the mirror never caught up: {mirror}"
        time.sleep(0.05)


def rows(db: Path) -> dict[str, list[Any]]:
    with sqlite3.connect(db) as conn:
        return {
            "projects": conn.execute("SELECT id, slug, human_key FROM projects ORDER BY id").fetchall(),
            "agents": conn.execute("SELECT id, name, program, model, project_id FROM agents ORDER BY id").fetchall(),
            "messages": conn.execute("SELECT id, project_id, sender_id, thread_id, subject, body_md, importance, "
                                     "created_ts FROM messages ORDER BY id").fetchall(),
            "recipients": conn.execute("SELECT message_id, agent_id, kind FROM message_recipients "
                                       "ORDER BY message_id, agent_id").fetchall(),
        }


def test_pushes_reach_a_bare_mirror_which_rebuilds_an_identical_database(mailbox: Mailbox, tmp_path: Path) -> None:
    bare = tmp_path / "mirror.git"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    configure(mailbox, str(bare))
    converse(mailbox, "first")
    report = mirrored(mailbox)
    assert report["ok"] is True
    assert report["pushes"] >= 1
    assert report["last_error"] is None
    assert git("--git-dir", str(bare), "rev-parse", "main") == report["pushed_head"]
    assert "first" in git("--git-dir", str(bare), "log", "--format=%B", "-n", "20", "main")
    before = rows(mailbox.paths.db)
    mailbox.stop()

    lost = Mailbox(git_init(tmp_path / "new-machine"), mailbox.backend)
    try:
        done = lost.mailctl("doctor", "--rebuild", "--yes", "--json", "--from", str(bare))
        assert done.returncode == 0, done.stderr
        assert rows(lost.paths.db) == before
    finally:
        lost.stop()

    copy = tmp_path / "browse"
    done = mailbox.mailctl("archive", "clone", str(bare), str(copy))
    assert done.returncode == 0, done.stderr
    assert any(copy.rglob("*.md")), "a working copy with the markdown files"


def test_a_diverged_mirror_is_reported_and_never_forced(mailbox: Mailbox, tmp_path: Path) -> None:
    bare = tmp_path / "mirror.git"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    configure(mailbox, str(bare))
    tokens = converse(mailbox, "before")
    mirrored(mailbox)
    other = tmp_path / "someone-else"
    git("clone", "-q", str(bare), str(other))
    (other / "NOTE.md").write_text("a commit the daemon does not have\n")
    git("-C", str(other), "add", "NOTE.md")
    git("-C", str(other), "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "-m", "foreign")
    git("-C", str(other), "push", "-q", "origin", "main")
    foreign = git("--git-dir", str(bare), "rev-parse", "main")
    mailbox.call("send_message", project_key=PROJECT, sender_name="GreenCastle",
                 sender_token=tokens["GreenCastle"], to=["BlueLake"],
                 subject="after", body_md="x")
    deadline = time.monotonic() + 30
    while not (mirror := mailbox.call("health_check")["archive"]["mirror"])["diverged"]:
        assert time.monotonic() < deadline, f"the divergence was never reported: {mirror}"
        time.sleep(0.05)
    assert mirror["ok"] is False
    assert "rejected the push" in mirror["last_error"]
    assert "Nothing was forced" in mirror["last_error"]
    assert mirror["push_lag_seconds"] is not None
    assert git("--git-dir", str(bare), "rev-parse", "main") == foreign, "the remote was not overwritten"
    assert mailbox.call("fetch_inbox", project_key=PROJECT, agent_name="BlueLake",
                        registration_token=tokens["BlueLake"])["unread_count"] == 1, \
        "mail flows on"


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    base = tmp_path / "served"
    base.mkdir()
    git("init", "-q", "--bare", "-b", "main", str(base / "mail.git"))
    port = free_port()
    proc = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack", f"--base-path={base}",
         "--listen=127.0.0.1", f"--port={port}", str(base)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        url = f"git://127.0.0.1:{port}/mail.git"
        deadline = time.monotonic() + 20
        while subprocess.run(["git", "ls-remote", url], capture_output=True, check=False, timeout=20).returncode:
            assert time.monotonic() < deadline, "git daemon did not come up"
            time.sleep(0.05)
        yield url, base / "mail.git"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_pushes_reach_git_daemon_on_loopback_and_checkout_gives_a_working_copy(
        mailbox: Mailbox, git_daemon: tuple[str, Path], tmp_path: Path) -> None:
    url, served = git_daemon
    configure(mailbox, url)
    converse(mailbox, "over git://")
    report = mirrored(mailbox)
    assert report["remote"] == url
    assert git("--git-dir", str(served), "rev-parse", "main") == report["pushed_head"]
    copy = tmp_path / "checkout"
    done = mailbox.mailctl("archive", "checkout", str(copy), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["action"] == "created"
    assert git("-C", str(copy), "rev-parse", "HEAD") == report["pushed_head"]
    assert any("over git://" in path.read_text() for path in copy.rglob("*.md"))
