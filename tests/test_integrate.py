"""`mailctl integrate`: every client's config written, merged, left alone on a second run and removed,
on fixture files under a throwaway HOME; plus --all, --dry-run, status, the blurb, doctor's checks,
and the global options (--root/--agent/--tools before and after the subcommand).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailctl.integrations import blurb, engine
from mailctl.integrations.clients import CLIENTS
from shared.client import stop_daemon
from shared.paths import MailboxPaths
from tests.conftest import git_init

# The table each client keeps its MCP servers in, and a server of someone else's to keep.
CONTAINER = {"claude-code": "mcpServers", "codex": "mcp_servers", "gemini": "mcpServers", "cursor": "mcpServers",
             "vscode": "servers", "cline": "mcpServers", "opencode": "mcp", "windsurf": "mcpServers"}
OTHER = {"command": "npx", "args": ["-y", "some-server"]}


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailboxPaths]:
    root = git_init(tmp_path_factory.mktemp("integrate") / "repo")
    os.environ["AGENT_MAIL_BACKEND"] = "asyncio"
    mailbox = MailboxPaths(root)
    try:
        yield mailbox
    finally:
        stop_daemon(mailbox, force=True)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("CODEX_HOME", "XDG_CONFIG_HOME", "AGENT_MAIL_NAME", "AGENT_MAIL_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def read(path: Path) -> dict[str, Any]:
    text = path.read_text()
    data: dict[str, Any] = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    return data


def existing_config(client_id: str) -> dict[str, Any]:
    data: dict[str, Any] = {"theme": "dark", CONTAINER[client_id]: {"other": OTHER}}
    if client_id == "codex":
        data["shell_environment_policy"] = {"inherit": "core"}
    return data


@pytest.mark.parametrize("client_id", list(CLIENTS))
def test_each_client_is_written_merged_left_alone_and_removed(client_id: str, paths: MailboxPaths,
                                                               home: Path) -> None:
    client = CLIENTS[client_id]
    scope = client.scope("project")
    config = client.config_path(home, paths.root, scope)
    config.parent.mkdir(parents=True, exist_ok=True)
    original = existing_config(client_id)
    if config.suffix == ".toml":
        import tomlkit

        config.write_text("# my codex settings\n" + tomlkit.dumps(original).replace(
            "[mcp_servers.other]", "# the server I use most\n[mcp_servers.other]"))
    else:
        config.write_text(json.dumps(original, indent=2))
    before = config.read_text()

    [first] = engine.integrate(paths, [client], scope="project", agent_name=None, dry_run=False, home=home)
    assert first.status == "written"
    data = read(config)
    servers = data[CONTAINER[client_id]]
    assert list(servers) == ["other", "agent-mail"]  # merged after the user's server, nothing reordered
    assert servers["other"] == OTHER
    assert data["theme"] == "dark"
    ours = servers["agent-mail"]
    command = ours["command"][0] if client_id == "opencode" else ours["command"]
    assert Path(command).is_absolute()
    assert os.access(command, os.X_OK)
    env = ours["environment"] if client_id == "opencode" else ours["env"]
    record = engine.load_record(paths)["clients"][client_id]
    assert env == {"AGENT_MAIL_TOKEN": record["token"]}
    assert record["agent"] in (ours["command"] if client_id == "opencode" else ours["args"])
    assert stat.S_IMODE(config.stat().st_mode) == 0o600  # it holds a token
    assert stat.S_IMODE(engine.record_path(paths).stat().st_mode) == 0o600
    assert Path(str(config) + ".agent-mail.bak").read_text() == before
    if client_id == "gemini":  # hooks, with Gemini's millisecond timeouts
        assert {g["hooks"][0]["timeout"] for groups in data["hooks"].values() for g in groups} == {10_000}
        assert data["hooks"]["BeforeTool"][0]["matcher"] == "write_file|replace"
    if client_id == "codex":
        assert data["shell_environment_policy"] == {"inherit": "core", "set": {"AGENT_MAIL_NAME": record["agent"]}}
    snapshot = {path: Path(path).read_bytes() for path in first.files}

    [second] = engine.integrate(paths, [client], scope="project", agent_name=None, dry_run=False, home=home)
    assert second.status == "unchanged"
    assert second.agent == first.agent
    assert {path: Path(path).read_bytes() for path in second.files} == snapshot

    if config.suffix == ".toml":  # tomlkit: the user's comments survive our edit
        assert config.read_text().count("# ") == 2
    [removed] = engine.remove(paths, [client], dry_run=False, home=home)
    assert removed.status == "removed"
    assert read(config) == original
    if config.suffix == ".toml":
        assert config.read_text() == before  # byte for byte, comments included
    for path in first.files:
        if path != str(config):
            assert not Path(path).exists()  # files integrate created are gone again
    assert client_id not in engine.load_record(paths)["clients"]


def test_claude_code_gets_hooks_env_and_approval_in_its_local_settings(paths: MailboxPaths, home: Path) -> None:
    settings = paths.root / ".claude" / "settings.local.json"
    settings.parent.mkdir(exist_ok=True)
    mine = {"matcher": "Bash", "hooks": [{"type": "command", "command": "./lint.sh"}]}
    settings.write_text(json.dumps({"hooks": {"PreToolUse": [mine]}, "enabledMcpjsonServers": ["db"]}))
    [outcome] = engine.integrate(paths, [CLIENTS["claude-code"]], scope="project", agent_name="TestPilot",
                                 dry_run=False, home=home)
    assert outcome.agent == "TestPilot"
    data = read(settings)
    assert data["enabledMcpjsonServers"] == ["db", "agent-mail"]
    assert data["env"] == {"AGENT_MAIL_NAME": "TestPilot"}
    pre = data["hooks"]["PreToolUse"]
    assert pre[0] == mine
    assert pre[1]["matcher"] == "Edit|Write|MultiEdit|NotebookEdit"
    assert " hook edit-guard --agent TestPilot " in pre[1]["hooks"][0]["command"]
    assert set(data["hooks"]) == {"PreToolUse", "SessionStart", "UserPromptSubmit", "PostToolUse"}
    engine.remove(paths, [CLIENTS["claude-code"]], dry_run=False, home=home)
    assert read(settings) == {"hooks": {"PreToolUse": [mine]}, "enabledMcpjsonServers": ["db"]}
    (paths.root / ".mcp.json").unlink(missing_ok=True)
    settings.unlink()


def test_user_scope_follows_the_repository_and_switching_scope_cleans_the_project_files(
        paths: MailboxPaths, home: Path) -> None:
    claude = CLIENTS["claude-code"]
    engine.integrate(paths, [claude], scope="project", agent_name=None, dry_run=False, home=home)
    assert (paths.root / ".mcp.json").exists()
    moved = engine.integrate(paths, [claude], scope="user", agent_name=None, dry_run=False, home=home)
    assert [(o.status, o.scope) for o in moved] == [("removed", "project"), ("written", "user")]
    assert not (paths.root / ".mcp.json").exists()  # the project-scope integration was removed first
    local = paths.root / ".claude" / "settings.local.json"
    assert not local.exists() or "mailctl" not in local.read_text()
    server = read(home / ".claude.json")["mcpServers"]["agent-mail"]
    assert "--root" not in server["args"]  # the mailbox follows the repository Claude runs in
    hooks = read(home / ".claude" / "settings.json")["hooks"]
    assert "--root" not in hooks["SessionStart"][0]["hooks"][0]["command"]
    assert "enabledMcpjsonServers" not in read(home / ".claude" / "settings.json")
    engine.remove(paths, [claude], dry_run=False, home=home)
    assert not (home / ".claude.json").exists()


# -- the command line ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = git_init(tmp_path_factory.mktemp("integrate-cli") / "repo")
    try:
        yield root
    finally:
        stop_daemon(MailboxPaths(root), force=True)


def mailctl(root: Path, home: Path, *args: str, check: bool = True,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_MAIL_", "CODEX_", "XDG_CONFIG"))}
    env.update(HOME=str(home), AGENT_MAIL_BACKEND="asyncio")
    return subprocess.run([sys.executable, "-P", "-m", "mailctl", *args], env=env, cwd=root, capture_output=True,
                          text=True, check=check, timeout=60, input=input_text)


def test_a_tracked_config_that_now_holds_a_token_is_pointed_out(cli_root: Path, home: Path) -> None:
    shared = cli_root / ".cursor" / "mcp.json"
    shared.parent.mkdir()
    shared.write_text(json.dumps({"mcpServers": {"other": OTHER}}))
    subprocess.run(["git", "-C", str(cli_root), "add", str(shared)], check=True)
    try:
        out = mailctl(cli_root, home, "integrate", "cursor").stdout
        assert f"note: {shared} is tracked by git and now holds an agent token" in out
    finally:
        mailctl(cli_root, home, "integrate", "cursor", "--remove")
        subprocess.run(["git", "-C", str(cli_root), "rm", "-q", "-f", "--cached", str(shared)], check=True)
        shared.unlink()
        (shared.parent / "mcp.json.agent-mail.bak").unlink()
        shared.parent.rmdir()


def test_dry_run_prints_the_diff_and_writes_nothing(cli_root: Path, home: Path) -> None:
    record = cli_root / ".mcp_mail" / "integrations.json"
    before = record.read_text() if record.exists() else None
    out = mailctl(cli_root, home, "integrate", "cursor", "--dry-run").stdout
    assert "would change (dry run)" in out
    assert '+    "agent-mail": {' in out
    assert engine.DRY_TOKEN in out
    assert not (cli_root / ".cursor").exists()
    assert (record.read_text() if record.exists() else None) == before


def test_all_sets_up_every_detected_client_with_distinct_agents_then_changes_nothing(cli_root: Path,
                                                                                     home: Path) -> None:
    for client in CLIENTS.values():
        for marker in client.markers(home):
            marker.mkdir(parents=True, exist_ok=True)
    first = json.loads(mailctl(cli_root, home, "integrate", "--all", "--json").stdout)
    assert {o["client"] for o in first} == set(CLIENTS)
    assert {o["status"] for o in first} == {"written"}
    agents = [o["agent"] for o in first]
    assert len(set(agents)) == len(agents)
    again = json.loads(mailctl(cli_root, home, "integrate", "--all", "--json").stdout)
    assert {o["status"] for o in again} == {"unchanged"}
    text = mailctl(cli_root, home, "integrate", "--all").stdout
    assert "already configured, nothing changed" in text
    status = json.loads(mailctl(cli_root, home, "integrate", "status", "--json").stdout)
    assert all(row["integrated"] and not row["problems"] for row in status)
    doctor = json.loads(mailctl(cli_root, home, "doctor", "--json").stdout)
    assert {c["name"] for c in doctor["checks"]} >= {"daemon", "permissions", "guard", "nested mailbox",
                                                    *(f"client {c}" for c in CLIENTS)}
    assert {c["level"] for c in doctor["checks"] if c["name"].startswith("client")} == {"ok"}
    removed = json.loads(mailctl(cli_root, home, "integrate", "--all", "--remove", "--json").stdout)
    assert {o["status"] for o in removed} == {"removed"}
    assert not (cli_root / ".mcp.json").exists()
    assert not (cli_root / "opencode.json").exists()


def test_doctor_reports_a_missing_executable_and_a_nested_mailbox(cli_root: Path, home: Path) -> None:
    mailctl(cli_root, home, "integrate", "windsurf")
    config = home / ".codeium" / "windsurf" / "mcp_config.json"
    data = read(config)
    data["mcpServers"]["agent-mail"]["command"] = "/nonexistent/mailctl"
    config.write_text(json.dumps(data))
    (cli_root / "sub" / ".mcp_mail").mkdir(parents=True)
    try:
        doctor = mailctl(cli_root, home, "doctor", "--json", check=False)
        assert doctor.returncode == 1
        checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
        assert checks["client windsurf"]["level"] == "fail"
        assert "/nonexistent/mailctl" in checks["client windsurf"]["detail"]
        assert checks["nested mailbox"]["level"] == "warn"
        assert str(cli_root / "sub" / ".mcp_mail") in checks["nested mailbox"]["detail"]
    finally:
        (cli_root / "sub" / ".mcp_mail").rmdir()
        mailctl(cli_root, home, "integrate", "windsurf", "--remove")


def test_the_blurb_is_printed_and_inserted_once(tmp_path: Path, cli_root: Path, home: Path) -> None:
    printed = mailctl(cli_root, home, "integrate", "--blurb").stdout
    assert printed == blurb.section()
    assert 500 < len(printed) < 1600  # about 200 tokens
    agents_md = tmp_path / "AGENTS.md"
    agents_md.write_text("# Project rules\n\nUse tabs.\n")
    mailctl(cli_root, home, "integrate", "--write-blurb", str(agents_md))
    once = agents_md.read_text()
    assert once.startswith("# Project rules\n\nUse tabs.\n")
    assert once.count(blurb.BEGIN) == 1
    again = mailctl(cli_root, home, "integrate", "--write-blurb", str(agents_md)).stdout
    assert "already up to date" in again
    assert agents_md.read_text() == once


def test_unknown_clients_and_missing_choices_are_clear_errors(cli_root: Path, home: Path) -> None:
    bad = mailctl(cli_root, home, "integrate", "emacs", check=False)
    assert bad.returncode == 1
    assert bad.stderr.startswith("mailctl: INVALID_ARGUMENT: unknown client 'emacs'; choose from claude-code")
    none = mailctl(cli_root, home, "integrate", check=False)
    assert "or use --all" in none.stderr


def test_global_options_work_before_and_after_the_subcommand(cli_root: Path, home: Path, tmp_path: Path) -> None:
    before = mailctl(tmp_path, home, "--root", str(cli_root), "call", "health_check")
    after = mailctl(tmp_path, home, "call", "health_check", "--root", str(cli_root))
    assert json.loads(before.stdout)["status"] == json.loads(after.stdout)["status"]
    # The form editors write: `mailctl mcp --root DIR --agent NAME --tools extended`.
    frame = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    shim = mailctl(tmp_path, home, "mcp", "--root", str(cli_root), "--agent", "EditorBot", "--tools", "extended",
                   input_text=json.dumps(frame) + "\n")
    reply = json.loads(shim.stdout.splitlines()[0])
    assert reply["id"] == 1
    assert "serverInfo" in reply["result"]


def test_a_root_that_does_not_exist_is_an_error_not_created(tmp_path: Path, home: Path) -> None:
    missing = tmp_path / "nope"
    for args in (["--root", str(missing), "call", "health_check"], ["call", "health_check", "--root", str(missing)]):
        run = mailctl(tmp_path, home, *args, check=False)
        assert run.returncode == 2
        assert run.stderr.startswith(f"mailctl: INVALID_ARGUMENT: --root {missing}: no such directory")
    assert not missing.exists()
