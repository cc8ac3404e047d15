"""Real clients read what `mailctl integrate` wrote and reach the server: Claude Code and Gemini CLI
connect (✔ Connected in `mcp list`); Codex CLI lists the server enabled (its `mcp list` does not
connect, so the test spawns exactly what it lists and does the handshake). Each client is an npm
package, installed into ~/.cache/agent-mail-tests/npm-clients/<package>@<version> on first use
(kept for later runs); a test skips, saying why, only when node/npm are missing or the install fails.
The throwaway HOME marks the repository as trusted, as a person does the first time they open a
client there: untrusted folders get no project servers at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import fasteners
import pytest

from shared.client import stop_daemon
from shared.paths import MailboxPaths
from tests.conftest import git_init

# A fresh machine downloads ~900 MB here once (npm's own timeout: 600 s per package).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

CACHE = Path.home() / ".cache" / "agent-mail-tests" / "npm-clients"
CLIENT_PACKAGES = {
    "claude": "@anthropic-ai/claude-code@2.1.332",
    "gemini": "@google/gemini-cli@0.61.0",
    "codex": "@openai/codex@0.171.0",
    "inspector": "@modelcontextprotocol/inspector@2.12.0",  # tests/test_external_clients.py
}


def installed(binary: str) -> Path:
    """The client's executable, installed from npm into the cache (keyed by package and version)."""
    package = CLIENT_PACKAGES[binary]
    prefix = CACHE / package.replace("/", "__")
    exe = prefix / "node_modules" / ".bin" / binary
    if exe.exists():
        return exe
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip(f"node/npm are not installed: cannot install {package}")
    CACHE.mkdir(parents=True, exist_ok=True)
    # One installer at a time (two test processes, e.g. under pytest-xdist, may want the same client):
    # the second waits, then finds the first one's install.
    with fasteners.InterProcessLock(str(CACHE / ".install.lock")):
        if exe.exists():
            return exe
        staging = Path(tempfile.mkdtemp(prefix=".install-", dir=CACHE))
        try:
            run = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix",
                                  str(staging), package], capture_output=True, text=True, timeout=600, check=False)
            if run.returncode != 0:
                pytest.skip(f"npm install {package} failed (registry unreachable?): {run.stderr.strip()[-300:]}")
            staging.rename(prefix)  # whole installs only: an interrupted one never looks cached
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return exe


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    root = git_init(tmp_path / "repo")
    try:
        yield root
    finally:
        stop_daemon(MailboxPaths(root), force=True)


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AGENT_MAIL_", "CODEX_", "CLAUDE", "GEMINI_", "XDG_CONFIG"))}
    env.update(HOME=str(home), AGENT_MAIL_BACKEND="asyncio")
    return env


def integrate(root: Path, env: dict[str, str], client: str) -> None:
    subprocess.run([sys.executable, "-P", "-m", "mailctl", "integrate", client], env=env, cwd=root, check=True,
                   capture_output=True, text=True, timeout=60)


def server_line(output: str) -> str:
    return next(line for line in output.splitlines() if "agent-mail" in line)


def test_claude_code_connects_to_the_server_integrate_configured(repo: Path, tmp_path: Path) -> None:
    claude = installed("claude")
    home = tmp_path / "home"
    home.mkdir()
    env = environment(home)
    integrate(repo, env, "claude-code")
    (home / ".claude.json").write_text(json.dumps({"projects": {str(repo): {"hasTrustDialogAccepted": True}}}))
    listed = subprocess.run([str(claude), "mcp", "list"], env=env, cwd=repo, capture_output=True, text=True,
                            timeout=180, check=True)
    line = server_line(listed.stdout)
    assert "✔ Connected" in line, listed.stdout
    assert "mailctl mcp --root" in line


def test_gemini_cli_connects_to_the_server_integrate_configured(repo: Path, tmp_path: Path) -> None:
    gemini = installed("gemini")
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    env = environment(home)
    integrate(repo, env, "gemini")
    (home / ".gemini" / "trustedFolders.json").write_text(json.dumps({str(repo): "TRUST_FOLDER"}))
    listed = subprocess.run([str(gemini), "mcp", "list"], env=env, cwd=repo, capture_output=True, text=True,
                            timeout=180, check=True)
    line = server_line(listed.stdout + listed.stderr)
    assert "Connected" in line, listed.stdout + listed.stderr
    assert "Disconnected" not in line


def test_codex_cli_lists_the_server_integrate_configured(repo: Path, tmp_path: Path) -> None:
    codex = installed("codex")
    home = tmp_path / "home"
    home.mkdir()
    env = environment(home)
    integrate(repo, env, "codex")
    listed = subprocess.run([str(codex), "mcp", "list", "--json"], env=env, cwd=repo, capture_output=True,
                            text=True, timeout=180, check=True)
    servers = {s["name"]: s for s in json.loads(listed.stdout)}
    ours = servers["agent-mail"]
    assert ours["enabled"] is True
    transport = ours["transport"]
    assert Path(transport["command"]).name == "mailctl"
    assert Path(transport["command"]).is_absolute()
    assert transport["args"][:1] == ["mcp"]
    # What Codex would spawn answers the MCP handshake.
    frame = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "codex", "version": "0"}}}
    shim = subprocess.run([transport["command"], *transport["args"]], input=json.dumps(frame) + "\n",
                          env={**env, **transport["env"]}, cwd=repo, capture_output=True, text=True, timeout=60,
                          check=True)
    assert json.loads(shim.stdout.splitlines()[0])["result"]["serverInfo"]
