"""Shared fixtures: real mailbox roots (git repos in tmp dirs) served by real maild processes.

`mailbox` gives a fresh root whose daemon is auto-started by the first client call and stopped
at teardown. It is parametrised over the daemon's async backend, so every end-to-end test runs
against maild on asyncio and on trio. Tests isolate all state through the root (no global env).
"""

from __future__ import annotations

import gc
import itertools
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.client import DaemonClient, reap_spawned, stop_daemon
from shared.paths import MailboxPaths, read_status

BACKENDS = ["asyncio", "trio"]


def git_init(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    return path


class Mailbox:
    """A mailbox root in a tmp dir plus helpers to talk to (and manage) its real daemon."""

    def __init__(self, root: Path, backend: str) -> None:
        self.root = root
        self.paths = MailboxPaths(root)
        self.backend = backend

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses (mailctl, maild, shims) aimed at this mailbox."""
        env = dict(os.environ)
        env["AGENT_MAIL_ROOT"] = str(self.root)
        env["AGENT_MAIL_BACKEND"] = self.backend
        return env

    def client(self, **kwargs: Any) -> DaemonClient:
        os.environ["AGENT_MAIL_BACKEND"] = self.backend  # inherited by an auto-started daemon
        return DaemonClient(self.paths, **kwargs)

    def call(self, tool: str, **arguments: Any) -> Any:
        with self.client() as conn:
            return conn.call_tool(tool, arguments)

    def mailctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-P", "-m", "mailctl", *args],
            env=self.env, cwd=self.root, capture_output=True, text=True, check=check, timeout=timeout,
        )

    def status(self) -> dict[str, Any] | None:
        return read_status(self.paths)

    def stop(self) -> None:
        stop_daemon(self.paths, force=True)

    def session(self, name: str) -> str:
        """The session id to say hello with (a ProjectBox makes it unique to its test)."""
        return name


class ProjectBox(Mailbox):
    """A test's own project (a fresh git repo) on a daemon other tests share: `root` is the project (its
    key, the CLI's working directory), `paths` and `env` are the shared daemon's. It cannot be stopped:
    a test that restarts or reconfigures the daemon needs the function-scoped `mailbox`."""

    def __init__(self, shared: Mailbox, project_root: Path, tag: str) -> None:
        super().__init__(shared.root, shared.backend)
        self.daemon_root = shared.root
        self.root = project_root
        self.tag = tag

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "AGENT_MAIL_ROOT": str(self.daemon_root)}

    def session(self, name: str) -> str:
        """A session id unique to this test (sessions bind agents daemon-wide)."""
        return f"{name}@{self.tag}"

    def stop(self) -> None:
        raise AssertionError("a shared daemon is stopped by its module fixture; use `mailbox` to restart one")


def children_of(pid: int) -> list[str]:
    """`pid (command) state` of each process whose parent is `pid`, zombies included (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it exited while we looked
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(f"{entry.name} ({name}) {fields[0]}")
    return found


@pytest.fixture(scope="session", autouse=True)
def every_process_is_reaped() -> Iterator[None]:
    """Fail the run when a test leaves a process behind: still running, or exited but never waited for.

    Popen's own "subprocess … is still running" ResourceWarning comes when the interpreter exits,
    after pytest, where it can only print a traceback. So check here, while failing still counts:
    collect garbage with ResourceWarning recorded, reap the daemons the client library auto-started
    (their tests stopped them; waiting is what is left), then look for our children."""
    yield
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    running = reap_spawned()
    problems = [f"ResourceWarning: {w.message}" for w in caught if issubclass(w.category, ResourceWarning)]
    problems += [f"auto-started maild pid {pid} still runs: stop it (Mailbox.stop)" for pid in running]
    if not running and not problems:
        problems += [f"child process left behind: {child}" for child in children_of(os.getpid())]
    assert not problems, "\n".join(problems)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _fresh_mailbox(tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mailbox]:
    monkeypatch.setenv("AGENT_MAIL_BACKEND", backend)
    box = Mailbox(git_init(tmp_path / "repo"), backend)
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture
def mailbox(tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mailbox]:
    yield from _fresh_mailbox(tmp_path, backend, monkeypatch)


@pytest.fixture
def fresh_mailbox(tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mailbox]:
    """The same as `mailbox`, for modules whose `mailbox` is a project on a shared daemon (`project_box`):
    tests there that write settings before the start, restart or damage the daemon take this one."""
    yield from _fresh_mailbox(tmp_path, backend, monkeypatch)


@pytest.fixture(scope="module")
def module_mailbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailbox]:
    """One mailbox shared by a module's tests, for client-side tests (the CLI's output) where the
    daemon's backend does not matter and a daemon per test would only cost time. Tests that use it
    must not depend on each other's mail: each works in its own `--project`."""
    box = Mailbox(git_init(tmp_path_factory.mktemp("shared") / "repo"), "asyncio")
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def shared_mailbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailbox]:
    """One daemon per backend for a whole module: for tests of the daemon's tools where a fresh root per
    test would only cost a start and a stop (about a CPU second each). Every test that uses it keeps to
    its own project key and session names (see `tag`), so no test sees another's mail or agents; tests
    that need settings, a restart or a damaged state keep the function-scoped `mailbox`."""
    backend = str(request.param)
    box = Mailbox(git_init(tmp_path_factory.mktemp(f"shared-{backend}") / "repo"), backend)
    try:
        yield box
    finally:
        box.stop()


_tags = itertools.count(1)


@pytest.fixture
def tag() -> str:
    """A short name unique to this test in the session, for project keys and session ids on a shared daemon."""
    return f"t{next(_tags)}"


@pytest.fixture
def project_box(shared_mailbox: Mailbox, tmp_path: Path, tag: str) -> ProjectBox:
    """This test's own project repo on the module's shared daemon (see ProjectBox)."""
    return ProjectBox(shared_mailbox, git_init(tmp_path / "repo"), tag)


@pytest.fixture
def anyio_backend(backend: str) -> str:
    """Async tests (pytest's anyio plugin) run on both backends too."""
    return backend
