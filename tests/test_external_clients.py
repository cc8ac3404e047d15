"""Clients nobody here wrote: the MCP Inspector CLI and Claude Code, against `mailctl mcp`.

They are npm packages, pinned and installed once into ~/.cache/agent-mail-tests/npm-clients (shared with
tests/test_client_handshakes.py and reused by later runs).
Skipped, with the reason, only when node/npm are missing or the registry cannot be reached.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Mailbox
from tests.test_client_handshakes import installed

# On a fresh machine the first test may install the npm packages (npm's own timeout: 600 s each).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def shim_command() -> list[str]:
    return [sys.executable, "-m", "mailctl", "mcp"]


def test_mcp_inspector_cli_lists_and_calls_tools(mailbox: Mailbox) -> None:
    inspector = str(installed("inspector"))
    listed = subprocess.run(
        [inspector, "--cli", *shim_command(), "--method", "tools/list"],
        env=mailbox.env, cwd=mailbox.root, capture_output=True, text=True, timeout=120, check=True,
    )
    names = {tool["name"] for tool in json.loads(listed.stdout)["tools"]}
    assert {"health_check", "send_message", "fetch_inbox", "call_extended_tool"} <= names
    called = subprocess.run(
        [inspector, "--cli", *shim_command(), "--method", "tools/call",
         "--tool-name", "ensure_project", "--tool-arg", "human_key=/inspected"],
        env=mailbox.env, cwd=mailbox.root, capture_output=True, text=True, timeout=120, check=True,
    )
    assert json.loads(called.stdout)["structuredContent"]["slug"] == "inspected"


def test_claude_code_connects_to_the_shim(mailbox: Mailbox, tmp_path: Path) -> None:
    env = {**mailbox.env, "HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    claude = str(installed("claude"))
    subprocess.run([claude, "mcp", "add", "agent-mail", "--", *shim_command()], env=env, cwd=mailbox.root,
                   capture_output=True, text=True, timeout=120, check=True)
    listed = subprocess.run([claude, "mcp", "list"], env=env, cwd=mailbox.root, capture_output=True, text=True,
                            timeout=180, check=True)
    line = next(line for line in listed.stdout.splitlines() if line.startswith("agent-mail:"))
    assert "Connected" in line, listed.stdout
