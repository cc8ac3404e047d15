"""Issue 20 figures: the client hooks' latency with a warm daemon (spawn -> JSON answer, the exact
command lines `integrate` writes for Claude Code, the hook JSON on stdin, as a client runs them), and
the time of `mailctl integrate --all`.

    python tests/bench/bench_hooks.py [--quick] [--no-wheel]

Targets: each hook p50 <= 50 ms with a warm daemon; `integrate --all` (8 clients) <= 2 s.

A hook is mostly interpreter start-up, so each install is measured beside a bare `python -P -c pass`
of the same interpreter, and `over_bare_python` gives the hook minus that (wall p50 and CPU). Two
installs: this checkout's venv (`pip install -e .`, what the README and CI use) and a wheel of it
installed into a throwaway venv (what `pipx install` gives users), built once per run; the wheel
venv borrows the dev venv's dependencies through a path .pth (hooks load none of them).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shlex
import shutil
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


def wheel_venv(root: Path) -> Path:
    """A throwaway venv holding a wheel of this checkout (no editable finder, no path .pth to the
    sources): its `mailctl`. Built from a copy of the sources, so the checkout gets no build/ dir."""
    work = Path(tempfile.mkdtemp(prefix="bench-hooks-wheel-"))
    source = work / "src"
    shutil.copytree(root, source, ignore=shutil.ignore_patterns(".git", ".venv", "tests", "docs", "build", "dist",
                                                                "__pycache__", "*.egg-info", ".mcp_mail"))
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(source)], check=True,
                   capture_output=True)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    wheel = next((work / "dist").glob("agent_mail-*.whl"))
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True)
    import sysconfig

    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    # The dependencies, for completeness (a hook loads none of them): the dev venv's site-packages as
    # a plain path line, which adds a directory and imports nothing.
    (site / "zz_bench_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    compileall.compile_dir(site / "mailctl", quiet=1)
    compileall.compile_dir(site / "shared", quiet=1)
    return venv / "bin" / "mailctl"


def with_executable(command: str, exe: Path | None) -> str:
    """`command` as `integrate` would have written it from the venv of `exe` (its first word)."""
    if exe is None:
        return command
    return shlex.join([str(exe), *shlex.split(command)[1:]])


def over_bare(hooks: dict[str, dict[str, float]], bare: dict[str, float]) -> dict[str, dict[str, float]]:
    """Each hook minus a bare interpreter's start-up: what the hook itself costs."""
    return {name: {"p50_ms": round(fig["p50_ms"] - bare["p50_ms"], 3),
                   "cpu_ms_mean": round(fig["cpu_ms_mean"] - bare["cpu_ms_mean"], 3)} for name, fig in hooks.items()}


def bench_installs(n: int, wheel: Path | None) -> dict[str, Any]:
    """The hooks of each install against one warm daemon, each beside its own bare interpreter."""
    installs: dict[str, Path | None] = {"dev_venv_editable": None}
    if wheel is not None:
        installs["wheel_venv"] = wheel
    paths = temp_mailbox("hooks")
    home = Path(tempfile.mkdtemp(prefix="bench-hooks-home-"))
    env = environment(home)
    out: dict[str, Any] = {}
    try:
        ensure_started(paths)
        mailctl(paths, env, "integrate", "claude-code")
        with DaemonClient(paths) as conn:  # a reservation for the guard to deny
            holder = conn.call_tool("register_agent", {"project_key": str(paths.root), "program": "bench",
                                                       "model": "x", "name": "GreenCastle"})
            conn.call_tool("file_reservation_paths", {"project_key": str(paths.root), "agent_name": "GreenCastle",
                                                      "registration_token": holder["registration_token"],
                                                      "paths": ["src/**"]})
        for name, exe in installs.items():
            python = sys.executable if exe is None else str(exe.parent / "python")
            bare = time_hook(f"{python} -P -c pass", {}, env, paths.root, n)
            hooks = bench_hooks(paths, env, exe, n)
            out[name] = {"mailctl": str(exe or Path(sys.executable).parent / "mailctl"),
                         "python_startup_baseline": bare, "hooks_warm_daemon": hooks,
                         "over_bare_python": over_bare(hooks, bare)}
    finally:
        stop(paths)
    return out


def bench_hooks(paths: MailboxPaths, env: dict[str, str], exe: Path | None, n: int) -> dict[str, Any]:
    hooks = json.loads((paths.root / ".claude" / "settings.local.json").read_text())["hooks"]
    base = {"session_id": "bench", "transcript_path": "/dev/null", "cwd": str(paths.root)}
    edit = {**base, "hook_event_name": "PreToolUse", "tool_name": "Edit"}
    guard = with_executable(hooks["PreToolUse"][-1]["hooks"][0]["command"], exe)
    return {
        "session_start": time_hook(with_executable(hooks["SessionStart"][0]["hooks"][0]["command"], exe),
                                   {**base, "hook_event_name": "SessionStart"}, env, paths.root, n),
        "unread_hint": time_hook(with_executable(hooks["UserPromptSubmit"][0]["hooks"][0]["command"], exe),
                                 {**base, "hook_event_name": "UserPromptSubmit", "prompt": "x"}, env, paths.root, n),
        "edit_guard_deny": time_hook(guard, {**edit, "tool_input": {"file_path": str(paths.root / "src" / "a.py")}},
                                     env, paths.root, n),
        "edit_guard_allow": time_hook(guard, {**edit, "tool_input": {"file_path": str(paths.root / "docs" / "a.md")}},
                                      env, paths.root, n),
    }


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--no-wheel", action="store_true", help="measure only this checkout's venv")
    args = parser.parse_args()
    # A pip install byte-compiles the package; an editable checkout whose sources changed (or a shell
    # with PYTHONDONTWRITEBYTECODE) would otherwise re-compile them in every hook process.
    root = Path(__file__).resolve().parents[2]
    compileall.compile_dir(root / "mailctl", quiet=1)
    compileall.compile_dir(root / "shared", quiet=1)
    wheel: Path | None = None
    note = "wheel_venv: not measured (--no-wheel)"
    if not args.no_wheel:
        try:
            wheel = wheel_venv(root)
            note = f"wheel_venv: a wheel of this checkout in a throwaway venv, built once for this run ({wheel})"
        except (subprocess.CalledProcessError, StopIteration) as exc:
            note = f"wheel_venv: not measured, building the wheel failed ({exc})"
    print(note, file=sys.stderr)
    try:
        figures = {"installs": bench_installs(10 if args.quick else 40, wheel), "note": note,
                   "integrate_all": bench_integrate_all(2 if args.quick else 5)}
    finally:
        if wheel is not None:
            shutil.rmtree(wheel.parents[2], ignore_errors=True)  # the throwaway venv and its wheel
    write_report("hooks", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
