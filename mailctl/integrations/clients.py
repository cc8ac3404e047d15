"""The coding clients `mailctl integrate` knows: where each keeps its MCP config, what entry it
wants, which hooks it supports, and how to tell whether it is installed.

Pure data and small functions of (home, project dir): no file is read or written here
(`configfile.py` edits files, `engine.py` decides what to do).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mailctl.integrations.configfile import AddHook, AddItem, Edit, SetKey

SERVER_NAME = "agent-mail"


@dataclass(frozen=True)
class Target:
    """Everything one integration writes: (file, format, edits, holds-a-token) per file."""

    files: list[tuple[Path, str, list[Edit], bool]]


@dataclass(frozen=True)
class Entry:
    """What the MCP server entry runs, and the hook commands (None: the client has no hooks)."""

    command: str
    args: list[str]
    env: dict[str, str]
    agent: str
    hook: Callable[[str], str]  # event -> the full `mailctl hook <event> ...` command line


@dataclass(frozen=True)
class Client:
    id: str
    title: str
    executables: tuple[str, ...]
    project_path: Callable[[Path], Path] | None  # project dir -> config file (None: user scope only)
    user_path: Callable[[Path], Path]  # home -> config file
    fmt: str
    build: Callable[[Entry, Path, bool], Target]  # (entry, config path, user scope) -> files to edit
    markers: Callable[[Path], tuple[Path, ...]]  # home -> dirs whose presence means "installed"
    hooks: str  # one line for docs/status: what hooks this client gets

    def config_path(self, home: Path, project: Path, scope: str) -> Path:
        if scope == "project" and self.project_path is not None:
            return self.project_path(project)
        return self.user_path(home)

    def scope(self, wanted: str) -> str:
        return "project" if wanted == "project" and self.project_path is not None else "user"

    def detected(self, home: Path) -> bool:
        return any(shutil.which(exe) for exe in self.executables) or any(p.exists() for p in self.markers(home))


def vscode_user_dir(home: Path) -> Path:
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "Code" / "User"
    return Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "Code" / "User"


def codex_home(home: Path) -> Path:
    return Path(os.environ["CODEX_HOME"]) if os.environ.get("CODEX_HOME") else home / ".codex"


def _server(entry: Entry) -> dict[str, object]:
    return {"command": entry.command, "args": entry.args, "env": dict(entry.env)}


def _mcp_servers(key: str = "mcpServers", **extra: object) -> Callable[[Entry, Path, bool], Target]:
    def build(entry: Entry, path: Path, user: bool) -> Target:
        return Target([(path, "json", [SetKey((key, SERVER_NAME), {**extra, **_server(entry)})], True)])
    return build


# Claude Code's hook events (the documented hook JSON arrives on stdin; see mailctl/hooks.py).
EDIT_TOOLS_CLAUDE = "Edit|Write|MultiEdit|NotebookEdit"
EDIT_TOOLS_GEMINI = "write_file|replace"


def _claude(entry: Entry, path: Path, user: bool) -> Target:
    # Hooks and env live in Claude's settings, not in the MCP file: ~/.claude/settings.json for the
    # user scope, the project's .claude/settings.local.json (personal, not committed) otherwise.
    settings = path.parent / ".claude" / ("settings.json" if user else "settings.local.json")
    hooks: list[Edit] = [
        AddHook("SessionStart", entry.hook("session-start")),
        AddHook("UserPromptSubmit", entry.hook("unread")),
        AddHook("PostToolUse", entry.hook("unread"), matcher="*"),
        AddHook("PreToolUse", entry.hook("edit-guard"), matcher=EDIT_TOOLS_CLAUDE),
        # The agent's shell (Bash tool, git hooks it runs) learns who it is: the git guard's identity.
        SetKey(("env", "AGENT_MAIL_NAME"), entry.agent),
    ]
    if not user:  # a project's .mcp.json server runs only once approved; integrate is that approval
        hooks.append(AddItem(("enabledMcpjsonServers",), SERVER_NAME))
    server: list[Edit] = [SetKey(("mcpServers", SERVER_NAME), {"type": "stdio", **_server(entry)})]
    return Target([(path, "json", server, True), (settings, "json", hooks, False)])


GEMINI_TIMEOUT_MS = 10_000  # Gemini CLI reads hook timeouts in milliseconds (Claude and Codex: seconds)


def _gemini(entry: Entry, path: Path, user: bool) -> Target:
    edits: list[Edit] = [
        SetKey(("mcpServers", SERVER_NAME), _server(entry)),
        AddHook("SessionStart", entry.hook("session-start"), timeout=GEMINI_TIMEOUT_MS),
        AddHook("BeforeAgent", entry.hook("unread"), timeout=GEMINI_TIMEOUT_MS),
        AddHook("BeforeTool", entry.hook("edit-guard"), matcher=EDIT_TOOLS_GEMINI, timeout=GEMINI_TIMEOUT_MS),
    ]
    return Target([(path, "json", edits, True)])


def _codex(entry: Entry, path: Path, user: bool) -> Target:
    edits: list[Edit] = [
        SetKey(("mcp_servers", SERVER_NAME), _server(entry)),
        SetKey(("shell_environment_policy", "set", "AGENT_MAIL_NAME"), entry.agent),
    ]
    hooks: list[Edit] = [
        AddHook("SessionStart", entry.hook("session-start")),
        AddHook("UserPromptSubmit", entry.hook("unread")),
    ]
    return Target([(path, "toml", edits, True), (path.parent / "hooks.json", "json", hooks, False)])


def _opencode(entry: Entry, path: Path, user: bool) -> Target:
    server = {"type": "local", "command": [entry.command, *entry.args], "enabled": True,
              "environment": dict(entry.env)}
    return Target([(path, "json", [SetKey(("mcp", SERVER_NAME), server)], True)])


def _vscode(entry: Entry, path: Path, user: bool) -> Target:
    return Target([(path, "json", [SetKey(("servers", SERVER_NAME), {"type": "stdio", **_server(entry)})], True)])


CLIENTS: dict[str, Client] = {c.id: c for c in [
    Client("claude-code", "Claude Code", ("claude",), lambda p: p / ".mcp.json", lambda h: h / ".claude.json",
           "json", _claude, lambda h: (h / ".claude",),
           "SessionStart, UserPromptSubmit + PostToolUse unread hint, PreToolUse edit guard"),
    Client("codex", "Codex CLI", ("codex",), None, lambda h: codex_home(h) / "config.toml", "toml", _codex,
           lambda h: (codex_home(h),), "SessionStart, UserPromptSubmit unread hint (no edit guard: see docs)"),
    Client("gemini", "Gemini CLI", ("gemini",), lambda p: p / ".gemini" / "settings.json",
           lambda h: h / ".gemini" / "settings.json", "json", _gemini, lambda h: (h / ".gemini",),
           "SessionStart, BeforeAgent unread hint, BeforeTool edit guard"),
    Client("cursor", "Cursor", ("cursor",), lambda p: p / ".cursor" / "mcp.json", lambda h: h / ".cursor" / "mcp.json",
           "json", _mcp_servers(), lambda h: (h / ".cursor",), "none (MCP only)"),
    Client("vscode", "VS Code / GitHub Copilot", ("code",), lambda p: p / ".vscode" / "mcp.json",
           lambda h: vscode_user_dir(h) / "mcp.json", "json", _vscode, lambda h: (vscode_user_dir(h),),
           "none (MCP only)"),
    Client("cline", "Cline", (), None,
           lambda h: vscode_user_dir(h) / "globalStorage" / "saoudrizwan.claude-dev" / "settings"
           / "cline_mcp_settings.json",
           "json", _mcp_servers(disabled=False),
           lambda h: (vscode_user_dir(h) / "globalStorage" / "saoudrizwan.claude-dev",),
           "none (MCP only)"),
    Client("opencode", "OpenCode", ("opencode",), lambda p: p / "opencode.json",
           lambda h: h / ".config" / "opencode" / "opencode.json", "json", _opencode,
           lambda h: (h / ".config" / "opencode",), "none (MCP only)"),
    Client("windsurf", "Windsurf", ("windsurf",), None, lambda h: h / ".codeium" / "windsurf" / "mcp_config.json",
           "json", _mcp_servers(), lambda h: (h / ".codeium" / "windsurf",), "none (MCP only)"),
]}

ALIASES = {"claude": "claude-code", "copilot": "vscode", "code": "vscode", "gemini-cli": "gemini",
           "codex-cli": "codex"}


def lookup(name: str) -> Client:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in CLIENTS:
        from shared.errors import InvalidArgument

        raise InvalidArgument(f"unknown client {name!r}; choose from {', '.join(CLIENTS)} (or --all)")
    return CLIENTS[key]


def hook_command(executable: list[str], event: str, root: Path | None, agent: str, project: str | None) -> str:
    words = [*executable, "hook", event, "--agent", agent]
    if root is not None:
        words += ["--root", str(root)]
    if project is not None and event == "edit-guard":
        words += ["--project", project]
    return shlex.join(words)
