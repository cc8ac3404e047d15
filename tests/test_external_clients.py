"""Clients nobody here wrote: the MCP Inspector CLI and Claude Code, against `mailctl mcp`.

They are npm packages, installed once into ~/.cache/agent-mail-tests/npm (reused by later runs).
Skipped, with the reason, only when node/npm are missing or the registry cannot be reached.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Mailbox

# On a fresh machine the first test also installs ~400 MB of npm packages (npm's own timeout: 600 s).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NPM_PREFIX = Path.home() / ".cache" / "agent-mail-tests" / "npm"
PACKAGES = ["@modelcontextprotocol/inspector@2.12.0", "@anthropic-ai/claude-code"]


@pytest.fixture(scope="session")
def npm_bin() -> Path:
    bin_dir = NPM_PREFIX / "node_modules" / ".bin"
    if (bin_dir / "inspector").exists() and (bin_dir / "claude").exists():
        return bin_dir
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("node/npm are not installed: cannot run the Inspector or Claude Code")
    NPM_PREFIX.mkdir(parents=True, exist_ok=True)
    install = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(NPM_PREFIX), *PACKAGES],
        capture_output=True, text=True, timeout=600, check=False,
    )
    if install.returncode != 0:
        pytest.skip(f"npm install failed (registry unreachable?): {install.stderr.strip()[-300:]}")
    return bin_dir


def shim_command() -> list[str]:
    return [sys.executable, "-m", "mailctl", "mcp"]


def test_mcp_inspector_cli_lists_and_calls_tools(mailbox: Mailbox, npm_bin: Path) -> None:
    listed = subprocess.run(
        [str(npm_bin / "inspector"), "--cli", *shim_command(), "--method", "tools/list"],
        env=mailbox.env, cwd=mailbox.root, capture_output=True, text=True, timeout=120, check=True,
    )
    names = {tool["name"] for tool in json.loads(listed.stdout)["tools"]}
    assert {"health_check", "send_message", "fetch_inbox", "call_extended_tool"} <= names
    called = subprocess.run(
        [str(npm_bin / "inspector"), "--cli", *shim_command(), "--method", "tools/call",
         "--tool-name", "ensure_project", "--tool-arg", "human_key=/inspected"],
        env=mailbox.env, cwd=mailbox.root, capture_output=True, text=True, timeout=120, check=True,
    )
    assert json.loads(called.stdout)["structuredContent"]["slug"] == "inspected"


def test_claude_code_connects_to_the_shim(mailbox: Mailbox, npm_bin: Path, tmp_path: Path) -> None:
    env = {**mailbox.env, "HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    claude = str(npm_bin / "claude")
    subprocess.run([claude, "mcp", "add", "agent-mail", "--", *shim_command()], env=env, cwd=mailbox.root,
                   capture_output=True, text=True, timeout=120, check=True)
    listed = subprocess.run([claude, "mcp", "list"], env=env, cwd=mailbox.root, capture_output=True, text=True,
                            timeout=180, check=True)
    line = next(line for line in listed.stdout.splitlines() if line.startswith("agent-mail:"))
    assert "Connected" in line, listed.stdout
