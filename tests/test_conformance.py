"""The official MCP conformance suite against the HTTP bridge, with an explained baseline of
expected failures (tests/conformance/expected-failures.txt)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Mailbox
from tests.test_external_clients import NPM_PREFIX
from tests.test_http import start_bridge

pytestmark = pytest.mark.slow
BASELINE = Path(__file__).parent / "conformance" / "expected-failures.txt"
PACKAGE = "@modelcontextprotocol/conformance@0.1.10"  # newer releases need node 22; this one runs on 20


def expected_failures() -> set[str]:
    return {line.split("#")[0].strip() for line in BASELINE.read_text().splitlines() if line.split("#")[0].strip()}


@pytest.fixture(scope="session")
def conformance() -> Path:
    binary = NPM_PREFIX / "node_modules" / ".bin" / "conformance"
    if binary.exists():
        return binary
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("node/npm are not installed: cannot run the conformance suite")
    NPM_PREFIX.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix",
                          str(NPM_PREFIX), PACKAGE], capture_output=True, text=True, timeout=600, check=False)
    if run.returncode != 0 or not binary.exists():
        pytest.skip(f"npm install of the conformance suite failed: {run.stderr.strip()[-300:]}")
    return binary


def test_the_bridge_passes_the_conformance_suite_except_the_explained_baseline(
    mailbox: Mailbox, conformance: Path
) -> None:
    if mailbox.backend != "asyncio":
        pytest.skip("one run is enough: the bridge's backend is covered by tests/test_http.py")
    bridge = start_bridge(mailbox, "http_allow_localhost_unauthenticated = true\n")
    run = subprocess.run([str(conformance), "server", "--url", f"http://127.0.0.1:{bridge.port}/mcp"],
                         capture_output=True, text=True, timeout=600, check=False)
    results = dict(re.findall(r"^[✓✗] (\S+): \d+ passed, (\d+) failed", run.stdout, flags=re.MULTILINE))
    assert results, run.stdout[-2000:]
    failed = {name for name, count in results.items() if int(count) > 0}
    baseline = expected_failures()
    assert failed - baseline == set(), f"new conformance failures: {sorted(failed - baseline)}"
    assert baseline - failed == set(), f"now passing, remove from the baseline: {sorted(baseline - failed)}"
    assert {"server-initialize", "ping", "tools-list", "resources-list"} <= set(results) - failed
