"""`mailctl hook <event>`: what coding clients run at their hook points to bring mail to the agent.

- `session-start`: who the agent is and an unread summary (also exports AGENT_MAIL_NAME to
  Claude Code's $CLAUDE_ENV_FILE, so the agent's shell, and the git guard in it, know the name).
- `unread`: "N unread, M urgent — call fetch_inbox", only when the counts changed since the last hint.
- `edit-guard`: before an edit tool runs, deny editing a path another agent holds exclusively
  (holder, pattern, expiry), with the git guard's warn mode and bypass; in block mode an unreachable
  mailbox is never a silent pass.
The client's hook JSON arrives on stdin; the answer is its JSON on stdout (Claude Code and Codex
share a shape; Gemini CLI's BeforeTool differs). Standard library + `shared` only, like the shim:
a hook runs on every prompt or edit, so start-up is the cost that matters: paths are strings (no
pathlib), the daemon is reached through `shared.wire` (no socket.py), and typing is never loaded
(~6 ms together; tests/bench/bench_hooks.py). `shared.client` comes in only to start a daemon.
"""

from __future__ import annotations

import json
import os
import sys

from shared.errors import DaemonUnavailable, MailError, NotFound
from shared.paths import STATE_DIR_NAME, git_toplevel, resolve_root_text, socket_path_text
from shared.wire import Wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from shared.client import DaemonClient
    from shared.paths import MailboxPaths

EVENTS = ("session-start", "unread", "edit-guard")
HINT_DIR = "hooks"


class Hook:
    def __init__(self, event: str, payload: dict[str, Any], root: str | None, agent: str | None,
                 project: str | None) -> None:
        self.event = event
        self.payload = payload
        cwd = payload.get("cwd") if isinstance(payload.get("cwd"), str) else None
        self.cwd: str = cwd if cwd and os.path.isdir(cwd) else os.getcwd()
        self.root: str = resolve_root_text(root, self.cwd) or self._user_root()
        self.state_dir = os.path.join(self.root, STATE_DIR_NAME)
        self.agent = agent or os.environ.get("AGENT_MAIL_NAME") or None
        self.project = project
        self.client_event = str(payload.get("hook_event_name") or "")

    @staticmethod
    def _user_root() -> str:
        from shared.paths import user_root

        return str(user_root())

    @property
    def paths(self) -> MailboxPaths:
        """The full MailboxPaths (pathlib), for the slow paths only: starting maild, reading its database."""
        from pathlib import Path

        from shared.paths import MailboxPaths

        return MailboxPaths(Path(self.root))

    def connect(self, *, autostart: bool) -> Wire | DaemonClient:
        """The running daemon through the light `Wire`; `shared.client` only to start one (or for a
        socket path too long for the state dir)."""
        socket_path = socket_path_text(self.root)
        if socket_path is not None:
            try:
                return Wire(socket_path)
            except DaemonUnavailable:
                if not autostart:
                    raise
        from shared.client import DaemonClient

        return DaemonClient(self.paths, autostart=autostart)

    # -- identity -------------------------------------------------------------------------------
    def token(self) -> str | None:
        if os.environ.get("AGENT_MAIL_TOKEN"):
            return os.environ["AGENT_MAIL_TOKEN"]
        if self.agent is None:
            return None
        from mailctl.integrations.record import RECORD_NAME, token_in

        return token_in(os.path.join(self.state_dir, RECORD_NAME), self.agent)

    def inbox(self, conn: Wire | DaemonClient, *, urgent_only: bool, limit: int) -> dict[str, Any]:
        result: dict[str, Any] = conn.call_tool("fetch_inbox", {
            "project_key": self.root, "agent_name": self.agent, "registration_token": self.token(),
            "limit": limit, "urgent_only": urgent_only, "include_bodies": False,
        })
        return result

    # -- output -----------------------------------------------------------------------------------
    def context(self, text: str, default_event: str) -> dict[str, Any]:
        event = self.client_event or default_event
        return {"hookSpecificOutput": {"hookEventName": event, "additionalContext": text}}

    # -- session-start ----------------------------------------------------------------------------
    def session_start(self) -> dict[str, Any] | None:
        if self.agent is None:
            return self.context("Agent Mail: no agent is configured for this session (set AGENT_MAIL_NAME or run "
                                "`mailctl integrate`). Call register_agent to get one.", "SessionStart")
        env_file = os.environ.get("CLAUDE_ENV_FILE")
        if env_file:
            import shlex

            with open(env_file, "a", encoding="utf-8") as handle:
                handle.write(f"export AGENT_MAIL_NAME={shlex.quote(self.agent)}\n")
        try:
            with self.connect(autostart=True) as conn:
                box = self.inbox(conn, urgent_only=False, limit=5)
        except NotFound:
            return self.context(f"Agent Mail: {self.agent} is not registered in the mailbox at {self.root}; "
                                f"call register_agent with name={self.agent}.", "SessionStart")
        unread, urgent = box["unread_count"], sum(1 for m in box["result"] if _urgent_unread(m))
        self._remember(unread, urgent)
        lines = [f"Agent Mail: you are {self.agent} (project {self.root}). {unread} unread"
                 + (f", {urgent} urgent" if urgent else "") + "."]
        lines += [f"- #{m['id']} from {m.get('from')}: {m.get('subject')}" for m in box["result"]
                  if not m.get("read_ts")]
        lines.append("Call fetch_inbox to read mail; reserve files (file_reservation_paths) before editing them.")
        return self.context("\n".join(lines), "SessionStart")

    # -- unread -----------------------------------------------------------------------------------
    def hint_file(self) -> str:
        return os.path.join(self.state_dir, HINT_DIR, f"{(self.agent or 'anonymous').lower()}.json")

    def _remember(self, unread: int, urgent: int) -> bool:
        """Store the counts; True when they differ from the last ones stored."""
        path = self.hint_file()
        try:
            with open(path, encoding="utf-8") as handle:
                last = json.load(handle)
        except (OSError, ValueError):
            last = None
        now = {"unread": unread, "urgent": urgent}
        if last == now:
            return False
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(now))
        os.replace(tmp, path)
        return True

    def unread(self) -> dict[str, Any] | None:
        if self.agent is None:
            return None
        try:  # no auto-start: a hint is not worth starting a daemon in the middle of a turn
            with self.connect(autostart=False) as conn:
                box = self.inbox(conn, urgent_only=True, limit=50)
        except (DaemonUnavailable, OSError):
            return None
        unread = int(box["unread_count"])
        urgent = sum(1 for m in box["result"] if _urgent_unread(m))
        if not self._remember(unread, urgent) or unread == 0:
            return None
        text = f"Agent Mail: {unread} unread" + (f", {urgent} urgent" if urgent else "") + " — call fetch_inbox."
        return self.context(text, "UserPromptSubmit")

    # -- edit-guard -------------------------------------------------------------------------------
    def edited_path(self) -> str | None:
        tool_input = self.payload.get("tool_input")
        if not isinstance(tool_input, dict):
            return None
        for key in ("file_path", "notebook_path", "path"):
            value = tool_input.get(key)
            if isinstance(value, str) and value:
                return value
        return None

    def decision(self, verdict: str, reason: str) -> dict[str, Any] | None:
        """The client's answer: deny, or allow with a message shown to the user (None: plain allow)."""
        if verdict == "deny":
            if self.client_event == "BeforeTool":  # Gemini CLI
                return {"decision": "deny", "reason": reason}
            return {"hookSpecificOutput": {"hookEventName": self.client_event or "PreToolUse",
                                           "permissionDecision": "deny", "permissionDecisionReason": reason}}
        return {"systemMessage": reason} if reason else None

    def edit_guard(self) -> dict[str, Any] | None:
        mode = os.environ.get("AGENT_MAIL_GUARD_MODE", "block").lower()
        target = self.edited_path()
        if target is None:
            return None
        repo = git_toplevel(self.cwd) or self.root
        absolute = target if os.path.isabs(target) else os.path.join(self.cwd, target)
        relative = os.path.relpath(os.path.normpath(absolute), repo)
        if relative.startswith(".."):
            return None  # outside the repository: no reservation can cover it
        if os.environ.get("AGENT_MAIL_BYPASS") == "1":
            return self.decision("allow", f"agent-mail edit guard BYPASSED (AGENT_MAIL_BYPASS=1) for {relative}")
        if self.project is None:  # `integrate` writes --project; without it, the guard's own key (cached)
            from pathlib import Path

            from shared.guard_install import cached_project_key

            self.project = cached_project_key(Path(repo), Path(self.state_dir, HINT_DIR, ".project-key.json"))
        project = self.project
        from mailctl import guard

        try:  # the fast path: the running daemon, one connection (the note is asked only on a conflict)
            conflicts: list[dict[str, Any]] | None
            with self.connect(autostart=False) as conn:
                conflicts, note = guard.conflicts_on(conn, project, self.agent, [relative])
        except (DaemonUnavailable, MailError, OSError):
            import sqlite3

            note = guard.NO_AGENT_NOTE if self.agent is None else ""

            try:
                conflicts = guard.conflicts_via_database(self.paths, project, self.agent, [relative])
            except (OSError, sqlite3.Error) as exc:
                reason = (f"agent-mail edit guard cannot read the mailbox at {self.paths.db} ({exc}), so it cannot "
                          f"tell whether {relative} is reserved. Fix the mailbox (mailctl doctor), or set "
                          "AGENT_MAIL_BYPASS=1 to skip the check.")
                return self.decision("allow" if mode == "warn" else "deny", reason)
        if not conflicts:
            return None
        held = "; ".join(f"{c['path']} is reserved by {c['agent']} (pattern {c['path_pattern']}, until "
                         f"{c['expires_ts']})" for c in conflicts)
        reason = (f"{held}. Do not edit it now: message {conflicts[0]['agent']} (send_message) to coordinate, wait "
                  "for the reservation to end, or work on other files." + (f" ({note})" if note else ""))
        if mode == "warn":
            return self.decision("allow", f"agent-mail edit guard (warn mode): {held}")
        return self.decision("deny", reason)

    def run(self) -> dict[str, Any] | None:
        if self.event == "session-start":
            return self.session_start()
        if self.event == "unread":
            return self.unread()
        return self.edit_guard()


def _urgent_unread(message: dict[str, Any]) -> bool:
    return message.get("importance") in ("high", "urgent") and not message.get("read_ts")


def read_payload() -> dict[str, Any]:
    if sys.stdin is None or sys.stdin.isatty():
        return {}
    try:
        data = json.loads(sys.stdin.read() or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def run(event: str, root: str | None, agent: str | None, project: str | None) -> int:
    """Run one hook; always exit 0 (the answer is the JSON), except a guard that cannot decide."""
    payload = read_payload()
    try:
        hook = Hook(event, payload, root, agent, project)
        answer = hook.run()
    except Exception as exc:  # a hook must answer its client, never print a traceback into it
        if event == "edit-guard" and os.environ.get("AGENT_MAIL_GUARD_MODE", "block").lower() != "warn":
            reason = (f"agent-mail edit guard failed ({type(exc).__name__}: {exc}); the edit is blocked because the "
                      "guard could not check reservations. Run `mailctl doctor`, or set AGENT_MAIL_BYPASS=1.")
            answer = {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "deny",
                                             "permissionDecisionReason": reason}}
            if payload.get("hook_event_name") == "BeforeTool":
                answer = {"decision": "deny", "reason": reason}
        else:
            print(f"agent-mail hook {event}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 0
    if answer is not None:
        sys.stdout.write(json.dumps(answer) + "\n")
    return 0


USAGE = "usage: mailctl hook {session-start,unread,edit-guard} [--agent NAME] [--root DIR] [--project KEY]"
OPTIONS = ("--agent", "--root", "--project", "--tools")  # --tools: accepted as everywhere in mailctl, unused


def parse(argv: list[str]) -> tuple[str, dict[str, str]]:
    """The hook's few arguments, parsed by hand: argparse alone costs a hook ~10 % of its run time."""
    event, values, index = None, {}, 0
    while index < len(argv):
        word = argv[index]
        name, eq, value = word.partition("=")
        if name in OPTIONS and eq:
            values[name] = value
        elif word in OPTIONS and index + 1 < len(argv):
            values[word] = argv[index + 1]
            index += 1
        elif word in EVENTS and event is None:
            event = word
        else:
            raise ValueError(f"unexpected argument {word!r}")
        index += 1
    if event is None:
        raise ValueError("name the event")
    return event, values


def main(argv: list[str] | None = None) -> int:
    """`mailctl hook EVENT ...` without loading the whole CLI (see mailctl/__main__.py)."""
    args = sys.argv[1:] if argv is None else argv
    if args in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    try:
        event, values = parse(args)
    except ValueError as exc:
        print(f"{USAGE}\nmailctl hook: INVALID_ARGUMENT: {exc}", file=sys.stderr)
        return 2
    return run(event, values.get("--root"), values.get("--agent"), values.get("--project"))
