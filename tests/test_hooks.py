"""Claude Code's hooks as `mailctl integrate` writes them, fed the documented hook JSON on stdin.

One real daemon for the module: `integrate claude-code` registers the agent and writes the hook
commands into .claude/settings.local.json; the tests run exactly those command lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.client import DaemonClient, stop_daemon
from shared.paths import MailboxPaths
from tests.conftest import git_init


@dataclass
class Setup:
    root: Path
    env: dict[str, str]
    agent: str
    holder: str
    holder_token: str
    commands: dict[str, str]

    def call(self, tool: str, **arguments: Any) -> Any:
        with DaemonClient(MailboxPaths(self.root)) as conn:
            return conn.call_tool(tool, arguments)

    def hook(self, event: str, payload: dict[str, Any], command: str | None = None,
             **env: str) -> dict[str, Any] | None:
        run = subprocess.run(command or self.commands[event], shell=True, input=json.dumps(payload),
                             capture_output=True, text=True, env={**self.env, **env}, cwd=self.root, timeout=60,
                             check=False)
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout) if run.stdout.strip() else None


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_MAIL_", "CLAUDE_"))}
    env.update(HOME=str(home), AGENT_MAIL_BACKEND="asyncio")
    return env


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("hooks")
    root, home = git_init(base / "repo"), base / "home"
    home.mkdir()
    env = clean_env(home)
    subprocess.run([sys.executable, "-P", "-m", "mailctl", "integrate", "claude-code"], env=env, cwd=root,
                   check=True, capture_output=True, text=True, timeout=60)
    record = json.loads((root / ".mcp_mail" / "integrations.json").read_text())["clients"]["claude-code"]
    settings = json.loads((root / ".claude" / "settings.local.json").read_text())["hooks"]
    commands = {
        "session-start": settings["SessionStart"][0]["hooks"][0]["command"],
        "unread": settings["UserPromptSubmit"][0]["hooks"][0]["command"],
        "edit-guard": settings["PreToolUse"][0]["hooks"][0]["command"],
    }
    box = Setup(root, env, record["agent"], "", "", commands)
    holder = box.call("register_agent", project_key=str(root), program="codex", model="gpt", name="GreenCastle")
    box.holder, box.holder_token = holder["name"], holder["registration_token"]
    box.call("file_reservation_paths", project_key=str(root), agent_name=box.holder,
             registration_token=box.holder_token, paths=["src/**"], exclusive=True, reason="refactor")
    try:
        yield box
    finally:
        stop_daemon(MailboxPaths(root), force=True)


def pre_tool_use(root: Path, path: str, tool: str = "Edit") -> dict[str, Any]:
    """Claude Code's documented PreToolUse input."""
    return {"session_id": "s-1", "transcript_path": "/dev/null", "cwd": str(root), "permission_mode": "default",
            "hook_event_name": "PreToolUse", "tool_name": tool,
            "tool_input": {"file_path": path, "old_string": "a", "new_string": "b"}}


def test_the_edit_guard_denies_a_path_another_agent_holds_naming_holder_pattern_and_expiry(setup: Setup) -> None:
    answer = setup.hook("edit-guard", pre_tool_use(setup.root, str(setup.root / "src" / "app.py")))
    assert answer is not None
    out = answer["hookSpecificOutput"]
    assert out["hookEventName"] == "PreToolUse"
    assert out["permissionDecision"] == "deny"
    reason = out["permissionDecisionReason"]
    assert "src/app.py is reserved by GreenCastle" in reason
    assert "pattern src/**" in reason
    assert "until 20" in reason  # the expiry timestamp
    # A relative path, from Write, is judged the same way.
    again = setup.hook("edit-guard", pre_tool_use(setup.root, "src/new.py", tool="Write"))
    assert again is not None
    assert again["hookSpecificOutput"]["permissionDecision"] == "deny"


def test_the_edit_guard_allows_unreserved_paths_and_the_holders_own(setup: Setup) -> None:
    assert setup.hook("edit-guard", pre_tool_use(setup.root, str(setup.root / "docs" / "x.md"))) is None
    assert setup.hook("edit-guard", pre_tool_use(setup.root, "/etc/hosts")) is None  # outside the repository
    holder_command = setup.commands["edit-guard"].replace(f"--agent {setup.agent}", f"--agent {setup.holder}")
    assert setup.hook("edit-guard", pre_tool_use(setup.root, "src/app.py"), holder_command) is None


def test_warn_mode_and_bypass_let_the_edit_through_and_say_so(setup: Setup) -> None:
    warned = setup.hook("edit-guard", pre_tool_use(setup.root, "src/app.py"), AGENT_MAIL_GUARD_MODE="warn")
    assert warned is not None
    assert "permissionDecision" not in json.dumps(warned)
    assert "GreenCastle" in warned["systemMessage"]
    bypassed = setup.hook("edit-guard", pre_tool_use(setup.root, "src/app.py"), AGENT_MAIL_BYPASS="1")
    assert bypassed is not None
    assert "BYPASSED" in bypassed["systemMessage"]


def test_gemini_before_tool_gets_its_own_deny_shape(setup: Setup) -> None:
    payload = {"session_id": "g", "cwd": str(setup.root), "hook_event_name": "BeforeTool", "tool_name": "write_file",
               "tool_input": {"file_path": str(setup.root / "src" / "a.py"), "content": "x"}}
    answer = setup.hook("edit-guard", payload)
    assert answer is not None
    assert answer["decision"] == "deny"
    assert "GreenCastle" in answer["reason"]


def test_an_unknown_agent_name_is_reported_not_taken_for_someone_else(setup: Setup) -> None:
    command = setup.commands["edit-guard"].replace(f"--agent {setup.agent}", "--agent NoSuchAgent")
    answer = setup.hook("edit-guard", pre_tool_use(setup.root, "src/app.py"), command)
    assert answer is not None
    assert "AGENT_MAIL_NAME=NoSuchAgent is not a registered agent" in (
        answer["hookSpecificOutput"]["permissionDecisionReason"])


def test_the_git_guard_reports_an_unknown_agent_name_too(setup: Setup) -> None:
    (setup.root / "src").mkdir(exist_ok=True)
    (setup.root / "src" / "staged.py").write_text("x = 1\n")
    subprocess.run(["git", "-C", str(setup.root), "add", "src/staged.py"], check=True)
    try:
        run = subprocess.run([sys.executable, "-P", "-m", "mailctl.guard", "--root", str(setup.root)],
                             env={**setup.env, "AGENT_MAIL_NAME": "NoSuchAgent"}, cwd=setup.root, input="",
                             capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 1
        assert "src/staged.py is reserved by GreenCastle" in run.stderr
        assert "AGENT_MAIL_NAME=NoSuchAgent is not a registered agent of this project" in run.stderr
        known = subprocess.run([sys.executable, "-P", "-m", "mailctl.guard", "--root", str(setup.root)],
                               env={**setup.env, "AGENT_MAIL_NAME": setup.agent}, cwd=setup.root, input="",
                               capture_output=True, text=True, timeout=60, check=False)
        assert known.returncode == 1
        assert "not a registered agent" not in known.stderr
    finally:
        subprocess.run(["git", "-C", str(setup.root), "rm", "-q", "--cached", "src/staged.py"], check=True)


def test_block_mode_never_passes_silently_when_the_mailbox_cannot_be_read(tmp_path: Path, setup: Setup) -> None:
    broken = git_init(tmp_path / "broken")
    (broken / ".mcp_mail").mkdir()
    (broken / ".mcp_mail" / "mail.sqlite3").write_bytes(b"this is not a database" * 100)
    command = f"{sys.executable} -P -m mailctl hook edit-guard --agent X --root {broken}"
    answer = setup.hook("edit-guard", pre_tool_use(broken, "src/app.py"), command)
    assert answer is not None
    assert answer["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert "AGENT_MAIL_BYPASS=1" in answer["hookSpecificOutput"]["permissionDecisionReason"]
    warned = setup.hook("edit-guard", pre_tool_use(broken, "src/app.py"), command, AGENT_MAIL_GUARD_MODE="warn")
    assert warned is not None
    assert "permissionDecision" not in json.dumps(warned)
    # No database at all: nothing can be reserved, so the edit goes ahead.
    empty = git_init(tmp_path / "empty")
    command = f"{sys.executable} -P -m mailctl hook edit-guard --agent X --root {empty}"
    assert setup.hook("edit-guard", pre_tool_use(empty, "src/app.py"), command) is None


def prompt(root: Path) -> dict[str, Any]:
    return {"session_id": "s-1", "transcript_path": "/dev/null", "cwd": str(root),
            "hook_event_name": "UserPromptSubmit", "prompt": "go on"}


def test_the_unread_hint_comes_once_per_change(setup: Setup) -> None:
    setup.hook("unread", prompt(setup.root))  # settle whatever an earlier test left
    sent = setup.call("send_message", project_key=str(setup.root), sender_name=setup.holder,
                      sender_token=setup.holder_token, to=[setup.agent], subject="API change", body_md="heads up",
                      importance="urgent")
    first = setup.hook("unread", prompt(setup.root))
    assert first is not None
    assert first["hookSpecificOutput"] == {
        "hookEventName": "UserPromptSubmit",
        "additionalContext": "Agent Mail: 1 unread, 1 urgent — call fetch_inbox.",
    }
    assert setup.hook("unread", prompt(setup.root)) is None  # nothing changed: no nagging
    post_tool = {**prompt(setup.root), "hook_event_name": "PostToolUse", "tool_name": "Bash"}
    assert setup.hook("unread", post_tool) is None
    setup.call("send_message", project_key=str(setup.root), sender_name=setup.holder, sender_token=setup.holder_token,
               to=[setup.agent], subject="more", body_md="x")
    second = setup.hook("unread", post_tool)
    assert second is not None
    assert second["hookSpecificOutput"]["hookEventName"] == "PostToolUse"
    assert second["hookSpecificOutput"]["additionalContext"].startswith("Agent Mail: 2 unread, 1 urgent")
    assert setup.hook("unread", post_tool) is None
    token = json.loads((setup.root / ".mcp_mail" / "integrations.json").read_text())["clients"]["claude-code"]["token"]
    setup.call("mark_message_read", project_key=str(setup.root), agent_name=setup.agent, registration_token=token,
               message_id=sent["deliveries"][0]["payload"]["id"])
    after_read = setup.hook("unread", prompt(setup.root))
    assert after_read is not None
    assert "1 unread — call fetch_inbox" in after_read["hookSpecificOutput"]["additionalContext"]


def test_session_start_names_the_agent_summarises_unread_and_exports_the_name(setup: Setup, tmp_path: Path) -> None:
    env_file = tmp_path / "claude.env"
    payload = {"session_id": "s-2", "transcript_path": "/dev/null", "cwd": str(setup.root),
               "hook_event_name": "SessionStart", "source": "startup"}
    answer = setup.hook("session-start", payload, CLAUDE_ENV_FILE=str(env_file))
    assert answer is not None
    context = answer["hookSpecificOutput"]["additionalContext"]
    assert answer["hookSpecificOutput"]["hookEventName"] == "SessionStart"
    assert f"you are {setup.agent}" in context
    assert "unread" in context
    assert "fetch_inbox" in context
    assert env_file.read_text() == f"export AGENT_MAIL_NAME={setup.agent}\n"


# -- start-up: what a hook process loads ----------------------------------------------------------
HEAVY = ("pathlib", "socket", "typing", "subprocess", "sqlite3", "argparse", "shared.client")


def imported(command: str, payload: dict[str, Any], setup: Setup) -> set[str]:
    """Modules a process loads beyond a bare interpreter's start-up (python's own -X importtime list)."""
    def modules(argv: list[str], data: str) -> set[str]:
        run = subprocess.run(argv, input=data, capture_output=True, text=True, cwd=setup.root, timeout=60,
                             env={**setup.env, "PYTHONPROFILEIMPORTTIME": "1"}, check=True)
        return {line.rsplit("|", 1)[1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}

    import shlex

    return modules(shlex.split(command), json.dumps(payload)) - modules([sys.executable, "-P", "-c", "pass"], "")


def test_hooks_answer_without_loading_pathlib_socket_py_or_typing(setup: Setup) -> None:
    """The hooks' cost is start-up (tests/bench/bench_hooks.py): with maild running, none of them
    loads the heavy modules, whether it denies, allows or hints."""
    deny = pre_tool_use(setup.root, str(setup.root / "src" / "app.py"))
    loaded = imported(setup.commands["edit-guard"], deny, setup)
    assert "shared.wire" in loaded  # the measurement sees the hook's own modules
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    allow = pre_tool_use(setup.root, str(setup.root / "docs" / "x.md"))
    assert imported(setup.commands["edit-guard"], allow, setup).isdisjoint(HEAVY)
    assert imported(setup.commands["unread"], prompt(setup.root), setup).isdisjoint(HEAVY)
    start = {"session_id": "s-3", "cwd": str(setup.root), "hook_event_name": "SessionStart"}
    assert imported(setup.commands["session-start"], start, setup).isdisjoint(HEAVY)


def test_session_start_starts_maild_when_none_runs(tmp_path: Path, setup: Setup) -> None:
    """The light connection only finds a running daemon; session-start falls back to the full client,
    which starts one (the unread hint and the guard do not start daemons)."""
    fresh = git_init(tmp_path / "fresh")
    payload = {"session_id": "s-4", "cwd": str(fresh), "hook_event_name": "SessionStart"}
    hint = f"{sys.executable} -P -m mailctl hook unread --agent Nobody --root {fresh}"
    assert setup.hook("unread", prompt(fresh), hint) is None
    assert not (fresh / ".mcp_mail" / "maild.sock").exists()
    command = f"{sys.executable} -P -m mailctl hook session-start --agent Nobody --root {fresh}"
    try:
        answer = setup.hook("session-start", payload, command)
        assert answer is not None
        assert "Nobody is not registered in the mailbox" in answer["hookSpecificOutput"]["additionalContext"]
        assert (fresh / ".mcp_mail" / "maild.sock").exists()
    finally:
        stop_daemon(MailboxPaths(fresh), force=True)


def test_the_light_connection_checks_the_socket_like_the_client_does(tmp_path: Path, setup: Setup) -> None:
    import socket

    from shared.errors import DaemonUnavailable, NotFound, UnsafeStateDir
    from shared.wire import Wire

    with Wire(str(setup.root / ".mcp_mail" / "maild.sock")) as wire:  # decoding: results and domain errors
        assert wire.call_tool("health_check")["status"] == "ok"
        with pytest.raises(NotFound):
            wire.call_tool("whois", {"project_key": str(setup.root), "agent_name": "NoSuchAgent"})
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    with pytest.raises(DaemonUnavailable, match="not listening"):
        Wire(str(state / "maild.sock"))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(state / "maild.sock"))
        listener.listen()
        (state / "maild.sock").chmod(0o777)  # writable by others: nothing is sent there
        with pytest.raises(UnsafeStateDir, match="writable by other users"):
            Wire(str(state / "maild.sock"))
    finally:
        listener.close()
