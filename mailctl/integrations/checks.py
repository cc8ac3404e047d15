"""`mailctl doctor`'s checks beyond the archive: is the setup around the mailbox sound?

The daemon answers; the state directory and socket are private; the git guard is installed and
chained; every integrated client's config runs an executable that exists; no nested `.mcp_mail`
(left by a `--root` pointing into a subdirectory) splits the agents into two mailboxes. Each check
is read-only and fast; fixing is left to the command each finding names.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import MailError
from shared.paths import STATE_DIR_NAME, MailboxPaths, pid_alive, read_status

SKIP_DIRS = {".git", "node_modules", ".venv", "venv", "__pycache__", ".tox", ".mypy_cache", ".ruff_cache",
             STATE_DIR_NAME}
MAX_WALK_DIRS = 20_000


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # ok | warn | fail
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level, "detail": self.detail}


def daemon_check(paths: MailboxPaths) -> Check:
    from shared.client import try_connect

    try:
        sock = try_connect(paths.socket)
    except (OSError, MailError) as exc:  # DaemonUnavailable carries the advice already
        return Check("daemon", "fail", str(exc))
    if sock is not None:
        sock.close()
        return Check("daemon", "ok", f"maild answers on {paths.socket}")
    status = read_status(paths)
    pid = status.get("pid") if status else None
    if isinstance(pid, int) and pid_alive(pid):
        return Check("daemon", "fail", f"maild (pid {pid}) runs but does not answer on {paths.socket}; "
                                       "`mailctl daemon restart`")
    return Check("daemon", "ok", "maild is not running; it starts on demand")


def permission_checks(paths: MailboxPaths) -> list[Check]:
    found = []
    for path, want, what in ((paths.state_dir, 0o700, "state directory"), (paths.socket, 0o600, "socket"),
                             (paths.state_dir / "integrations.json", 0o600, "integration record (holds tokens)")):
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if info.st_uid != os.getuid():
            found.append(Check("permissions", "fail", f"{what} {path} belongs to uid {info.st_uid}, not you"))
        elif mode & 0o077:
            found.append(Check("permissions", "fail", f"{what} {path} has mode {mode:o}; other users can reach it: "
                                                      f"chmod {want:o} {path}"))
    return found or [Check("permissions", "ok", "state directory, socket and record are private to you")]


def guard_check(root: Path) -> Check:
    if not (root / ".git").exists():
        return Check("guard", "ok", f"{root} is not a git repository; no commit guard needed")
    from shared import guard_install as guard

    try:
        directory = guard.hooks_dir(root)
    except MailError as exc:
        return Check("guard", "warn", exc.message)
    hook = directory / "pre-commit"
    try:
        text = hook.read_text(errors="replace")
    except OSError:
        return Check("guard", "warn", "the git guard is not installed: `mailctl guard install` blocks commits on "
                                      "paths other agents reserved")
    if guard.MARKER not in text:
        return Check("guard", "warn", f"{hook} is not the agent-mail chain runner; `mailctl guard install` keeps it "
                                      "as pre-commit.orig and chains it")
    if not os.access(hook, os.X_OK):
        return Check("guard", "fail", f"{hook} is not executable: chmod +x {hook}")
    chained = [p.name for p in (directory / "pre-commit.orig", directory / "hooks.d" / "pre-commit") if p.exists()]
    python = text.rsplit('exec "', 1)[-1].split('"', 1)[0] if 'exec "' in text else ""
    if python and not Path(python).exists():
        return Check("guard", "fail", f"{hook} runs {python}, which no longer exists: `mailctl guard install` again")
    return Check("guard", "ok", "git guard installed" + (f", chained with {', '.join(chained)}" if chained else ""))


def client_checks(paths: MailboxPaths, home: Path) -> list[Check]:
    from mailctl.integrations import engine
    from mailctl.integrations.clients import CLIENTS

    try:
        record = engine.load_record(paths)["clients"]
    except MailError as exc:
        return [Check("clients", "fail", exc.message)]
    found = []
    for client_id, info in record.items():
        client = CLIENTS.get(client_id)
        if client is None:
            continue
        problems = engine.config_problems(client, info, home)
        found += [Check(f"client {client_id}", "fail", p) for p in problems]
        if not problems:
            found.append(Check(f"client {client_id}", "ok", f"{client.title} runs {info['executable'][0]} as "
                                                            f"{info['agent']}"))
    return found


def nested_mailboxes(root: Path) -> list[Path]:
    """`.mcp_mail` directories below the root (bounded walk; vendored and VCS dirs skipped)."""
    found = []
    for seen, (current, dirs, _files) in enumerate(os.walk(root)):
        if seen >= MAX_WALK_DIRS:
            break
        if Path(current) != root and STATE_DIR_NAME in dirs:
            found.append(Path(current) / STATE_DIR_NAME)
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".cache")]
    return found


def nested_check(root: Path) -> Check:
    nested = nested_mailboxes(root)
    if not nested:
        return Check("nested mailbox", "ok", "no .mcp_mail below the root")
    return Check("nested mailbox", "warn", f"{', '.join(map(str, nested))}: a second mailbox below this one (made "
                                           "by a --root or a daemon started in a subdirectory); agents using it do "
                                           "not see this mailbox. Stop its daemon (mailctl --root DIR daemon stop) "
                                           "and remove it, or point every client at one root")


def environment_checks(paths: MailboxPaths, home: Path | None = None) -> list[Check]:
    return [daemon_check(paths), *permission_checks(paths), guard_check(paths.root),
            *client_checks(paths, home or Path.home()), nested_check(paths.root)]
