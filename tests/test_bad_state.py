"""A corrupt, foreign, future or unwritable `.mcp_mail/` gives one actionable line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import apsw
import pytest

from maild.store.migrations import APPLICATION_ID
from tests.conftest import Mailbox


def start(mailbox: Mailbox) -> subprocess.CompletedProcess[str]:
    return mailbox.mailctl("call", "health_check", check=False)


def assert_one_line_failure(run: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert run.returncode == 3, run
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    for needle in needles:
        assert needle in run.stderr


def test_a_file_that_is_not_a_database_is_reported_not_reset(mailbox: Mailbox) -> None:
    mailbox.paths.state_dir.mkdir(mode=0o700)
    junk = b"definitely not sqlite " * 500
    mailbox.paths.db.write_bytes(junk)
    run = start(mailbox)
    assert_one_line_failure(run, "not a SQLite database", "maild.log")
    assert mailbox.paths.db.read_bytes() == junk, "the file must be left untouched"
    assert "Traceback" not in mailbox.paths.log_file.read_text()


def test_a_foreign_sqlite_database_is_refused(mailbox: Mailbox) -> None:
    mailbox.paths.state_dir.mkdir(mode=0o700)
    conn = apsw.Connection(str(mailbox.paths.db))
    conn.execute("CREATE TABLE invoices(id INTEGER PRIMARY KEY)")
    conn.close()
    assert_one_line_failure(start(mailbox), "does not belong to Agent Mail")


def test_a_database_from_a_future_version_is_refused(mailbox: Mailbox) -> None:
    assert mailbox.call("health_check")["status"] == "ok"
    mailbox.stop()
    conn = apsw.Connection(str(mailbox.paths.db))
    conn.execute("INSERT INTO schema_migrations(version, name, applied_ts) VALUES (999, 'future', 'x')")
    assert conn.execute("PRAGMA application_id").get == APPLICATION_ID
    conn.close()
    assert_one_line_failure(start(mailbox), "schema version 999", "upgrade")


def make_unwritable(path: Path) -> Callable[[], None]:
    """chmod is enough for a normal user; root (as in CI) needs the immutable attribute."""
    if os.geteuid() != 0:
        path.chmod(0o500)
        return lambda: path.chmod(0o700)
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False).returncode != 0:
        pytest.skip("running as root on a filesystem without chattr +i: cannot make a dir unwritable")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_an_unwritable_state_dir_is_reported(mailbox: Mailbox) -> None:
    mailbox.paths.state_dir.mkdir(mode=0o700)
    restore = make_unwritable(mailbox.paths.state_dir)
    try:
        run = start(mailbox)
        assert run.returncode == 3
        assert "Traceback" not in run.stderr
        assert str(mailbox.paths.state_dir) in run.stderr
    finally:
        restore()


def test_a_state_path_that_is_a_file_is_reported(mailbox: Mailbox) -> None:
    mailbox.paths.state_dir.write_text("oops")
    run = start(mailbox)
    assert run.returncode == 3
    assert "Traceback" not in run.stderr
    assert str(mailbox.paths.state_dir) in run.stderr


def test_maild_itself_prints_one_line_for_a_bad_config(mailbox: Mailbox) -> None:
    mailbox.paths.state_dir.mkdir(mode=0o700)
    mailbox.paths.config_file.write_text('tools_mode = "core"\nidle_timeout_seconds = "soon"\n')
    run = subprocess.run(
        [sys.executable, "-m", "maild", "--root", str(mailbox.root)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert run.returncode == 2
    assert run.stderr.strip() == "maild: idle_timeout_seconds from config.toml must be a float, got 'soon'"
