"""Issue 5 figures: shim spawn -> initialize (warm daemon), first agent with a cold daemon, shim RSS,
and the token cost of tools/list in core and extended modes (bytes / 4).

    python tests/bench/bench_shim.py [--quick]

Targets: warm spawn -> initialize result <= 100 ms; cold <= 1.5 s; RSS <= 25 MB;
tools/list core <= 2,000 tokens, extended <= 8,000.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from shared.client import ensure_started
from shared.paths import MailboxPaths
from tests.bench.common import stop, summarise, temp_mailbox, write_report

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "bench", "version": "0"}}}


def spawn(paths: MailboxPaths, *extra: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, AGENT_MAIL_ROOT=str(paths.root))
    return subprocess.Popen([sys.executable, "-m", "mailctl", "mcp", *extra], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, cwd=paths.root)


def initialize(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
    proc.stdin.flush()
    reply = json.loads(proc.stdout.readline())
    assert reply["id"] == 1, reply
    assert "result" in reply, reply


def finish(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.close()
    proc.wait(timeout=10)
    proc.stdout.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tools_list_tokens(paths: MailboxPaths, mode: str) -> dict[str, int]:
    proc = spawn(paths, "--tools", mode)
    initialize(proc)
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
    proc.stdin.write(b'{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}\n')
    proc.stdin.flush()
    line = proc.stdout.readline()
    finish(proc)
    tools = json.loads(line)["result"]["tools"]
    payload = json.dumps({"tools": tools}, separators=(",", ":"))
    return {"tools": len(tools), "bytes": len(payload), "tokens_estimate": len(payload) // 4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    runs = 5 if args.quick else 20

    cold = []
    for _ in range(3 if args.quick else 8):
        paths = temp_mailbox("shim-cold")
        t0 = time.perf_counter()
        proc = spawn(paths)
        initialize(proc)
        cold.append(time.perf_counter() - t0)
        finish(proc)
        stop(paths)

    paths = temp_mailbox("shim-warm")
    try:
        ensure_started(paths)
        warm, rss = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            proc = spawn(paths)
            initialize(proc)
            warm.append(time.perf_counter() - t0)
            rss.append(rss_mb(proc.pid))
            finish(proc)
        figures = {
            "spawn_to_initialize_warm_daemon": summarise(warm),
            "first_agent_cold_daemon": summarise(cold),
            "shim_rss_mb_max": round(max(rss), 1),
            "tools_list_core": tools_list_tokens(paths, "core"),
            "tools_list_extended": tools_list_tokens(paths, "extended"),
        }
    finally:
        stop(paths)
    write_report("shim", figures)


if __name__ == "__main__":
    main()
