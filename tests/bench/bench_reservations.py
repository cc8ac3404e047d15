"""Issue 7 figures: conflict checks with 1,000 active reservations; the guard on 500 staged files.

    python tests/bench/bench_reservations.py [--quick]

Targets: conflict check <= 2 ms p50 with 1,000 active reservations; the guard hook on a commit of
500 staged files <= 150 ms with the daemon running.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from shared.client import DaemonClient
from tests.bench.common import stop, summarise, temp_mailbox, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    samples = 200 if args.quick else 1000
    paths = temp_mailbox("reservations")
    project = str(paths.root)
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
        check = []
        for n in range(samples):
            t0 = time.perf_counter()
            me.call_tool("guard_check", {"paths": [f"pkg{n % 10}/mod3/part4/file.py"], "agent_name": "Checker"})
            check.append(time.perf_counter() - t0)
        grant = []
        for n in range(samples // 4):
            t0 = time.perf_counter()
            me.call_tool("file_reservation_paths", {"project_key": project, "paths": [f"new/{n}.py"],
                                                    "fail_on_conflict": True})
            grant.append(time.perf_counter() - t0)

        repo = paths.root
        subprocess.run(["git", "-C", str(repo), "config", "user.email", "b@b"], check=True)
        subprocess.run(["git", "-C", str(repo), "config", "user.name", "b"], check=True)
        for n in range(500):
            target = repo / "app" / f"d{n % 20}" / f"f{n}.py"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"x = {n}\n")
        subprocess.run(["git", "-C", str(repo), "add", "app"], check=True)
        env = dict(os.environ, AGENT_MAIL_NAME="Checker")
        hook = []
        for _ in range(5 if args.quick else 15):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-P", "-m", "mailctl", "--root", str(repo), "guard", "check"],
                           cwd=repo, env=env, check=True, stdin=subprocess.DEVNULL)
            hook.append(time.perf_counter() - t0)
        for conn in [*holders, me]:
            conn.close()
    finally:
        stop(paths)
    write_report("reservations", {
        "active_reservations": 1000,
        "conflict_check_guard_check": summarise(check),
        "reserve_with_fail_on_conflict": summarise(grant),
        "guard_hook_500_staged_files": summarise(hook),
    })


if __name__ == "__main__":
    main()
