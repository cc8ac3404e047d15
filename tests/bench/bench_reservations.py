"""Issue 7 figures: conflict checks with 1,000 active reservations; the guard on 500 staged files.

    python tests/bench/bench_reservations.py [--quick]

Targets: conflict check <= 2 ms p50 with 1,000 active reservations; the guard hook on a commit of
500 staged files <= 150 ms with the daemon running. Measured through the real daemon socket:
`file_reservation_paths` calls that meet conflicts (refused with fail_on_conflict, and granted
advisorily), grants of fresh paths, `guard_check`, and real `git commit`s of 500 staged files
through the installed hook (against `git commit --no-verify` for the hook's share).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from shared.client import DaemonClient
from tests.bench.common import stop, summarise, temp_mailbox, write_report

STAGED_FILES = 500


def timed(samples: int, call: Any) -> list[float]:
    out = []
    for n in range(samples):
        t0 = time.perf_counter()
        call(n)
        out.append(time.perf_counter() - t0)
    return out


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)


def stage_500(repo: Path, round_no: int) -> None:
    for n in range(STAGED_FILES):
        target = repo / "app" / f"d{n % 20}" / f"f{n}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"x = {n} + {round_no}\n")
    git(repo, "add", "app")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    samples = 200 if args.quick else 1000
    commits = 5 if args.quick else 15
    paths = temp_mailbox("reservations")
    repo = paths.root
    project = str(repo)
    try:
        holders = []
        for i in range(10):
            conn = DaemonClient(paths, hello={"session": f"h{i}", "client": "bench", "pid": os.getpid()})
            conn.call_tool("register_agent",
                           {"project_key": project, "program": "b", "model": "b", "name": f"Holder{i}"})
            for j in range(10):
                conn.call_tool("file_reservation_paths", {"project_key": project, "paths": [
                    f"pkg{i}/mod{j}/part{k}/**" for k in range(10)]})
            holders.append(conn)
        me = DaemonClient(paths, hello={"session": "me", "client": "bench", "pid": os.getpid()})
        me.call_tool("register_agent", {"project_key": project, "program": "b", "model": "b", "name": "Checker"})

        def hot(n: int) -> str:
            return f"pkg{n % 10}/mod{n % 7}/part{n % 9}/file{n}.py"

        def refused(n: int) -> None:
            result = me.call_tool("file_reservation_paths", {"project_key": project, "paths": [hot(n)],
                                                             "fail_on_conflict": True})
            assert result["refused"]
            assert result["conflicts"]

        advisory_only: list[float] = []

        def advisory_timed(n: int) -> None:
            t0 = time.perf_counter()
            result = me.call_tool("file_reservation_paths", {"project_key": project, "paths": [hot(n)]})
            advisory_only.append(time.perf_counter() - t0)
            assert result["granted"]
            assert result["conflicts"]
            me.call_tool("release_file_reservations", {"project_key": project,
                                                       "file_reservation_ids": [result["granted"][0]["id"]]})

        conflict_refused = timed(samples, refused)
        timed(samples // 4, advisory_timed)
        fresh_grant = timed(samples // 4, lambda n: me.call_tool(
            "file_reservation_paths", {"project_key": project, "paths": [f"new/{n}.py"], "fail_on_conflict": True}))
        me.call_tool("release_file_reservations", {"project_key": project})  # back to 1,000 active
        check = timed(samples, lambda n: me.call_tool(
            "guard_check", {"paths": [hot(n)], "agent_name": "Checker", "project_key": project}))

        git(repo, "config", "user.email", "b@b")
        git(repo, "config", "user.name", "b")
        stage_500(repo, 0)
        git(repo, "commit", "-qm", "base", "--no-verify")
        subprocess.run([sys.executable, "-P", "-m", "mailctl", "--root", str(repo), "guard", "install"],
                       cwd=repo, check=True, capture_output=True)
        env = dict(os.environ, AGENT_MAIL_NAME="Checker")
        with_hook, without_hook = [], []
        for round_no in range(1, commits + 1):
            for flags, bucket in (((), with_hook), (("--no-verify",), without_hook)):
                stage_500(repo, round_no * 2 + len(flags))
                t0 = time.perf_counter()
                git(repo, "commit", "-qm", f"round {round_no}", *flags, env=env)
                bucket.append(time.perf_counter() - t0)
        stage_500(repo, 0)
        hook_check = timed(commits, lambda n: subprocess.run(
            [sys.executable, "-P", "-m", "mailctl", "--root", str(repo), "guard", "check"],
            cwd=repo, env=env, check=True, stdin=subprocess.DEVNULL))
        for conn in [*holders, me]:
            conn.close()
    finally:
        stop(paths)
    write_report("reservations", {
        "active_reservations": 1000,
        "reserve_conflicting_fail_on_conflict_refused": summarise(conflict_refused),
        "reserve_conflicting_advisory_granted": summarise(advisory_only),
        "reserve_fresh_path_fail_on_conflict_granted": summarise(fresh_grant),
        "guard_check_tool": summarise(check),
        "git_commit_500_staged_with_hook": summarise(with_hook),
        "git_commit_500_staged_no_verify": summarise(without_hook),
        "hook_share_of_commit_p50_ms": round(statistics.median(with_hook) * 1000
                                             - statistics.median(without_hook) * 1000, 3),
        "mailctl_guard_check_500_staged": summarise(hook_check),
    })


if __name__ == "__main__":
    main()
