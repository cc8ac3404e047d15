"""The git guard's check: what the hook runs to refuse commits/pushes touching paths another agent holds.

Installing the chain-runner hook lives in `shared.guard_install` (the daemon's
`install_precommit_guard` tool uses it too, and the daemon never imports this client package).

The guard is scoped to one project: `install` records the project key in the repository's git
config (`agentmail.project`, shared by its worktrees; default: the main checkout's top-level path,
upstream's human_key convention), so with one mailbox shared by several repositories a reservation
in one never blocks commits in another. The check asks the running daemon (one socket round trip);
when none runs it reads the database read-only. Decision for an unreachable or unreadable
mailbox: with no database at all nothing can be reserved, so the commit passes with a notice; a
database that exists but cannot be read blocks (in block mode) — never a silent pass — and says
how to bypass (`AGENT_MAIL_BYPASS=1`).
"""

from __future__ import annotations

import os
import sys

from shared.errors import DaemonUnavailable, MailError, NotFound

# The rest loads where it is used: the edit-time hook (mailctl/hooks.py) imports this module on
# every edit for `unknown_agent_note`, and start-up is all its cost.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from shared.client import DaemonClient
    from shared.paths import MailboxPaths
    from shared.wire import Wire


def project_slug(project_key: str) -> str:
    """The daemon's slug rule (shared.slugs, used by maild.services.projects too)."""
    from shared.slugs import slugify

    return slugify(project_key.strip())


def _git_lines(repo: Path, *args: str) -> list[str]:
    import subprocess  # the git hook needs it; the edit-time hook, which imports this module, does not

    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout
    return [line for line in out.split("\0" if "-z" in args else "\n") if line]


def _name_status_paths(fields: list[str]) -> list[str]:
    """Every path in `--name-status -z` output: both the old and the new side of renames and copies."""
    paths, index = [], 0
    while index < len(fields):
        status = fields[index]
        count = 2 if status[:1] in ("R", "C") else 1
        paths.extend(fields[index + 1 : index + 1 + count])
        index += 1 + count
    return paths


def staged_paths(repo: Path) -> list[str]:
    """Paths a commit would touch, both sides of renames and copies."""
    return _name_status_paths(_git_lines(repo, "diff", "--cached", "--no-relative", "--name-status", "-M", "-z"))


def pushed_paths(repo: Path, stdin: str) -> list[str]:
    paths: list[str] = []
    zero = "0" * 40
    for line in stdin.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[1] == zero:
            continue
        local, remote = parts[1], parts[3]
        span = [f"{remote}..{local}"] if remote != zero else [local, "--not", "--remotes"]
        for commit in _git_lines(repo, "rev-list", *span):
            paths.extend(_name_status_paths(_git_lines(
                repo, "diff-tree", "--no-commit-id", "--name-status", "-r", "-M", "--root", "-z", commit)))
    return list(dict.fromkeys(paths))


def conflicts_via_daemon(paths: MailboxPaths, project: str, agent: str | None,
                         files: list[str]) -> tuple[list[dict[str, Any]], str]:
    """The running daemon's conflicts for `files` (see `conflicts_on`)."""
    from shared.client import DaemonClient

    with DaemonClient(paths, autostart=False) as conn:
        return conflicts_on(conn, project, agent, files)


def conflicts_on(conn: DaemonClient | Wire, project: str, agent: str | None,
                 files: list[str]) -> tuple[list[dict[str, Any]], str]:
    """The daemon's conflicts for `files`, and (only when there are some) the note about an unknown
    agent name, asked on the same connection: one connect and hello, not two."""
    result = conn.call_tool("guard_check", {"paths": files, "agent_name": agent, "project_key": project})
    conflicts = list(result["conflicts"])
    return conflicts, (unknown_agent_note(conn, project, agent) if conflicts else "")


def conflicts_via_database(paths: MailboxPaths, project: str, agent: str | None,
                           files: list[str]) -> list[dict[str, Any]] | None:
    """None when there is no database at all; raises OSError/sqlite3.Error when it cannot be read."""
    import sqlite3  # only when the daemon is down: the hook's fast path does without it

    from shared.globs import is_virtual, overlaps

    if not paths.db.exists():
        return None
    conn = sqlite3.connect(f"file:{paths.db}?mode=ro", uri=True, timeout=5)
    try:
        import datetime as dt  # only when the daemon is down: the edit hook's fast path does without it

        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        rows = conn.execute(
            "SELECT a.name, r.path_pattern, r.expires_ts, r.id FROM file_reservations r"
            " JOIN agents a ON a.id = r.agent_id JOIN projects p ON p.id = r.project_id"
            " WHERE r.released_ts IS NULL AND r.exclusive = 1 AND r.expires_ts > ? AND p.slug = ?",
            (now, project_slug(project)),
        ).fetchall()
    finally:
        conn.close()
    me = (agent or "").lower()
    return [
        {"path": f, "agent": name, "path_pattern": pattern, "expires_ts": expires, "reservation_id": rid}
        for name, pattern, expires, rid in rows
        if name.lower() != me and not is_virtual(pattern)
        for f in files if overlaps(pattern, f)
    ]


NO_AGENT_NOTE = "No agent name is set (AGENT_MAIL_NAME), so every exclusive reservation counts as another agent's."


def unknown_agent_note(conn: DaemonClient | Wire, project: str, agent: str | None) -> str:
    """Said beside conflicts: a name the mailbox does not know is reported, not silently treated as
    some other agent (then no reservation can be recognised as the caller's own)."""
    if agent is None:
        return NO_AGENT_NOTE
    try:
        conn.call_tool("whois", {"project_key": project, "agent_name": agent, "include_recent_commits": False})
    except NotFound:
        return (f"AGENT_MAIL_NAME={agent} is not a registered agent of this project, so none of these reservations "
                "can be yours; fix the name (mailctl integrate sets it) or register the agent.")
    except (MailError, OSError):
        pass
    return ""


def check(root: Path, repo: Path, hook: str, stdin: str, project_key: str | None = None) -> int:
    """Run the guard for one hook; returns the exit status for git."""
    mode = os.environ.get("AGENT_MAIL_GUARD_MODE", "block").lower()
    if os.environ.get("AGENT_MAIL_BYPASS") == "1":
        print("agent-mail guard: BYPASSED (AGENT_MAIL_BYPASS=1) — file reservations were NOT checked",
              file=sys.stderr)
        return 0
    files = staged_paths(repo) if hook == "pre-commit" else pushed_paths(repo, stdin)
    if not files:
        return 0
    from shared.guard_install import project_key_for
    from shared.paths import MailboxPaths

    agent = os.environ.get("AGENT_MAIL_NAME") or None
    project = project_key or project_key_for(repo)
    paths = MailboxPaths(root)
    try:
        conflicts: list[dict[str, Any]] | None
        conflicts, note = conflicts_via_daemon(paths, project, agent, files)
    except (DaemonUnavailable, MailError, OSError):
        import sqlite3

        note = NO_AGENT_NOTE if agent is None else ""  # whether a name is known needs the daemon

        try:
            conflicts = conflicts_via_database(paths, project, agent, files)
        except (OSError, sqlite3.Error) as exc:
            verdict = "blocked" if mode != "warn" else "allowed (warn mode)"
            print(f"agent-mail guard: cannot read the mailbox at {paths.db} ({exc}); commit {verdict}. "
                  "Fix its permissions, or run with AGENT_MAIL_BYPASS=1 to skip the check.", file=sys.stderr)
            return 0 if mode == "warn" else 1
        if conflicts is None:
            print("agent-mail guard: no mailbox database yet; nothing is reserved", file=sys.stderr)
            return 0
    if not conflicts:
        return 0
    for c in conflicts:
        print(f"agent-mail guard: {c['path']} is reserved by {c['agent']} ({c['path_pattern']}, until "
              f"{c['expires_ts']})", file=sys.stderr)
    if note:
        print(f"agent-mail guard: {note}", file=sys.stderr)
    if mode == "warn":
        print("agent-mail guard: warn mode — continuing anyway", file=sys.stderr)
        return 0
    print(f"agent-mail guard: {hook} blocked. Coordinate with the holder(s) (send_message), wait for the "
          "reservation to end, or set AGENT_MAIL_BYPASS=1 to override.", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """What the installed hook runs: `python -m mailctl.guard --root ROOT --hook HOOK`. Lighter than
    `mailctl guard check` (which loads every command group): the hook's cost is mostly start-up.
    git runs hooks at the checkout's top level, so the current directory is the repository."""
    import argparse
    from pathlib import Path

    from shared.guard_install import HOOKS

    parser = argparse.ArgumentParser(prog="python -m mailctl.guard", description=main.__doc__)
    parser.add_argument("--root", required=True, help="the mailbox root")
    parser.add_argument("--hook", default="pre-commit", choices=HOOKS)
    parser.add_argument("--project", default=None, help="override the recorded project key")
    args = parser.parse_args(argv)
    stdin = "" if sys.stdin.isatty() else sys.stdin.read()
    return check(Path(args.root), Path.cwd(), args.hook, stdin, project_key=args.project)


if __name__ == "__main__":
    sys.exit(main())
