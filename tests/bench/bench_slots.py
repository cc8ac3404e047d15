"""Issue 17 figures (build slots), through the real daemon socket:

    python tests/bench/bench_slots.py [--quick]

- acquire + release of a free exclusive slot, renew, and an acquire refused by a conflict, with
  100 other slots held (one client, sequential calls; p50/p90/p99);
- 16 clients racing for one exclusive slot: wall time of the race, and the holders (must be 1);
- `mailctl run --slot S -- true` against plain `true` (what wrapping a command costs: Python
  start-up, one connection, acquire, release).
No targets were set by the issue; these are reported figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from shared.client import DaemonClient
from shared.paths import MailboxPaths
from tests.bench.common import stop, summarise, temp_mailbox, write_report

RACERS = 16


def timed(samples: int, call: Any) -> list[float]:
    out = []
    for n in range(samples):
        t0 = time.perf_counter()
        call(n)
        out.append(time.perf_counter() - t0)
    return out


def agent(paths: MailboxPaths, project: str, name: str) -> DaemonClient:
    conn = DaemonClient(paths, hello={"session": f"s-{name}", "client": "bench", "pid": os.getpid()})
    conn.call_tool("register_agent", {"project_key": project, "program": "b", "model": "b", "name": name})
    return conn


def race(paths: MailboxPaths, project: str, round_no: int) -> tuple[float, int]:
    """(seconds from the start signal to the last answer, grants) for RACERS clients on one slot."""
    conns = [agent(paths, project, f"Racer{round_no}x{i}") for i in range(RACERS)]
    barrier = threading.Barrier(RACERS + 1)
    grants: list[bool] = []

    def go(conn: DaemonClient) -> None:
        barrier.wait()
        result = conn.call_tool("acquire_build_slot", {"project_key": project, "slot": f"race-{round_no}"})
        grants.append(bool(result["granted"]))

    threads = [threading.Thread(target=go, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for conn in conns:
        conn.close()
    return elapsed, sum(grants)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    samples = 200 if args.quick else 1000
    rounds = 5 if args.quick else 20
    runs = 5 if args.quick else 15
    paths = temp_mailbox("slots")
    project = str(paths.root)
    try:
        holder = agent(paths, project, "Holder")
        for i in range(100):
            holder.call_tool("acquire_build_slot", {"project_key": project, "slot": f"held-{i}"})
        me = agent(paths, project, "Builder")

        def cycle(n: int) -> None:
            me.call_tool("acquire_build_slot", {"project_key": project, "slot": "free"})
            me.call_tool("release_build_slot", {"project_key": project, "slot": "free"})

        acquire_release = timed(samples, cycle)
        me.call_tool("acquire_build_slot", {"project_key": project, "slot": "mine"})
        renew = timed(samples, lambda n: me.call_tool("renew_build_slot", {"project_key": project, "slot": "mine"}))
        refused = timed(samples, lambda n: me.call_tool(
            "acquire_build_slot", {"project_key": project, "slot": f"held-{n % 100}"}))
        races = [race(paths, project, r) for r in range(rounds)]
        holder.close()
        me.close()
        env = dict(os.environ, AGENT_MAIL_ROOT=str(paths.root))
        wrapped = timed(runs, lambda n: subprocess.run(
            [sys.executable, "-P", "-m", "mailctl", "run", "--slot", "cli", "--", "true"], cwd=paths.root, env=env,
            check=True))
        bare = timed(runs, lambda n: subprocess.run(["true"], check=True))
    finally:
        stop(paths)
    write_report("slots", {
        "other_slots_held": 100,
        "acquire_then_release_free_slot": summarise(acquire_release),
        "renew": summarise(renew),
        "acquire_refused_by_conflict": summarise(refused),
        "race_16_clients_wall": summarise([elapsed for elapsed, _ in races]),
        "race_holders": sorted({grants for _, grants in races}),
        "mailctl_run_true": summarise(wrapped),
        "plain_true": summarise(bare),
    })


if __name__ == "__main__":
    main()
