"""Issue 20 figures: the client hooks' latency with a warm daemon (spawn -> JSON answer, the exact
command lines `integrate` writes for Claude Code), and the time of `mailctl integrate --all`.

    python tests/bench/bench_hooks.py [--quick]

Targets: each hook p50 <= 50 ms with a warm daemon; `integrate --all` (8 clients) <= 2 s.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from mailctl.integrations.clients import CLIENTS
from shared.client import DaemonClient, ensure_started
from shared.paths import MailboxPaths
from tests.bench.common import stop, summarise, temp_mailbox, write_report


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_MAIL_", "CODEX_", "XDG_CONFIG"))}
    env["HOME"] = str(home)
    return env


def mailctl(paths: MailboxPaths, env: dict[str, str], *args: str) -> str:
    exe = Path(sys.executable).parent / "mailctl"
    command = [str(exe)] if exe.exists() else [sys.executable, "-P", "-m", "mailctl"]
    return subprocess.run([*command, *args], env=env, cwd=paths.root, check=True, capture_output=True,
                          text=True).stdout


def time_hook(command: str, payload: dict[str, Any], env: dict[str, str], cwd: Path, n: int) -> dict[str, float]:
    """Wall time spawn -> exit, plus the hook process's own CPU time (user + sys), which a busy
    machine inflates far less than wall time."""
    argv, data, samples = shlex.split(command), json.dumps(payload), []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(argv, input=data, env=env, cwd=cwd, check=True, capture_output=True, text=True)
        samples.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / n
    return {**summarise(samples), "cpu_ms_mean": round(cpu * 1000, 3)}


def bench_hooks(n: int) -> dict[str, Any]:
    paths = temp_mailbox("hooks")
    home = Path(tempfile.mkdtemp(prefix="bench-hooks-home-"))
    env = environment(home)
    try:
        ensure_started(paths)
        mailctl(paths, env, "integrate", "claude-code")
        hooks = json.loads((paths.root / ".claude" / "settings.local.json").read_text())["hooks"]
        with DaemonClient(paths) as conn:
            holder = conn.call_tool("register_agent", {"project_key": str(paths.root), "program": "bench",
                                                       "model": "x", "name": "GreenCastle"})
            conn.call_tool("file_reservation_paths", {"project_key": str(paths.root), "agent_name": "GreenCastle",
                                                      "registration_token": holder["registration_token"],
                                                      "paths": ["src/**"]})
        base = {"session_id": "bench", "transcript_path": "/dev/null", "cwd": str(paths.root)}
        edit = {**base, "hook_event_name": "PreToolUse", "tool_name": "Edit"}
        return {
            "session_start": time_hook(hooks["SessionStart"][0]["hooks"][0]["command"],
                                       {**base, "hook_event_name": "SessionStart"}, env, paths.root, n),
            "unread_hint": time_hook(hooks["UserPromptSubmit"][0]["hooks"][0]["command"],
                                     {**base, "hook_event_name": "UserPromptSubmit", "prompt": "x"}, env,
                                     paths.root, n),
            "edit_guard_deny": time_hook(hooks["PreToolUse"][-1]["hooks"][0]["command"],
                                         {**edit, "tool_input": {"file_path": str(paths.root / "src" / "a.py")}},
                                         env, paths.root, n),
            "edit_guard_allow": time_hook(hooks["PreToolUse"][-1]["hooks"][0]["command"],
                                          {**edit, "tool_input": {"file_path": str(paths.root / "docs" / "a.md")}},
                                          env, paths.root, n),
        }
    finally:
        stop(paths)


def bench_integrate_all(rounds: int) -> dict[str, Any]:
    first, again = [], []
    for _ in range(rounds):
        paths = temp_mailbox("integrate")
        home = Path(tempfile.mkdtemp(prefix="bench-integrate-home-"))
        for client in CLIENTS.values():
            for marker in client.markers(home):
                marker.mkdir(parents=True, exist_ok=True)
        env = environment(home)
        try:
            ensure_started(paths)  # a warm daemon: the figure is integrate's own work
            start = time.perf_counter()
            out = json.loads(mailctl(paths, env, "integrate", "--all", "--json"))
            first.append(time.perf_counter() - start)
            assert len(out) == len(CLIENTS), out
            start = time.perf_counter()
            mailctl(paths, env, "integrate", "--all", "--json")
            again.append(time.perf_counter() - start)
        finally:
            stop(paths)
    return {"clients": len(CLIENTS), "first_run": summarise(first), "second_run_unchanged": summarise(again)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    # A pip install byte-compiles the package; an editable checkout whose sources changed (or a shell
    # with PYTHONDONTWRITEBYTECODE) would otherwise re-compile them in every hook process.
    root = Path(__file__).resolve().parents[2]
    compileall.compile_dir(root / "mailctl", quiet=1)
    compileall.compile_dir(root / "shared", quiet=1)
    baseline = time_hook(f"{sys.executable} -P -c pass", {}, dict(os.environ), Path.cwd(), 10 if args.quick else 40)
    figures = {"python_startup_baseline": baseline, "hooks_warm_daemon": bench_hooks(10 if args.quick else 40),
               "integrate_all": bench_integrate_all(2 if args.quick else 5)}
    write_report("hooks", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
