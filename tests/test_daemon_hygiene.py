"""Small daemon hygiene (issue 13 item 11): the log has a size cap, and a daemon whose mailbox root
was deleted notices and exits instead of serving a mailbox nobody can reach."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.config import load_settings
from shared.paths import pid_alive
from tests.conftest import Mailbox


def wait_until(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


LOGGER = """
import logging, sys
from pathlib import Path
from maild.logs import configure_logging
configure_logging(Path(sys.argv[1]), "INFO", False, max_bytes=4096, backups=2)
for i in range(400):
    logging.getLogger("maild").info("line %d %s", i, "x" * 60)
sys.stderr.write("a crash traceback goes to the current log\\n")
"""


def test_the_log_rotates_at_its_size_cap_and_stderr_follows(tmp_path: Path) -> None:
    log = tmp_path / "maild.log"
    with log.open("ab") as stderr:  # as an auto-started daemon: its stderr is the log file
        subprocess.run([sys.executable, "-c", LOGGER, str(log)], stderr=stderr, check=True, timeout=60)
    logs = sorted(p.name for p in tmp_path.glob("maild.log*"))
    assert logs == ["maild.log", "maild.log.1", "maild.log.2"], logs
    for name in logs:
        assert (tmp_path / name).stat().st_size <= 4096, name
    assert "line 399" in log.read_text()
    assert log.read_text().endswith("a crash traceback goes to the current log\n")


def test_log_size_settings_come_from_config(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("log_max_bytes = 65536\nlog_backups = 5\n")
    settings = load_settings(tmp_path, environ={})
    assert (settings.log_max_bytes, settings.log_backups) == (65536, 5)


def test_a_daemon_whose_root_is_deleted_exits(mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_MAIL_ROOT_CHECK_SECONDS", "0.2")  # inherited by the auto-started daemon
    pid = mailbox.call("health_check")["pid"]
    shutil.rmtree(mailbox.root)
    wait_until(lambda: not pid_alive(pid))
