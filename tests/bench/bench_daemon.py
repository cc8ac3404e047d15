"""Issue 2 figures: maild cold start, and health_check round trips over the Unix socket.

    python tests/bench/bench_daemon.py [--quick] [--backend asyncio|trio]

Cold start = a client finds no daemon, spawns it, and gets its first health_check answer.
Round trip = one modern-era tools/call frame on an open connection (and, separately, the cost of
a fresh connection per call, which is what a one-shot `mailctl call` pays on top).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from shared.client import DaemonClient
from tests.bench.common import stop, summarise, temp_mailbox, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    os.environ["AGENT_MAIL_BACKEND"] = args.backend
    cold_runs = 3 if args.quick else 10
    calls = 300 if args.quick else 3000

    cold: list[float] = []
    for _ in range(cold_runs):
        paths = temp_mailbox("cold")
        started = time.perf_counter()
        with DaemonClient(paths) as client:
            client.call_tool("health_check")
        cold.append(time.perf_counter() - started)
        stop(paths)

    paths = temp_mailbox("rtt")
    try:
        with DaemonClient(paths) as client:
            for _ in range(50):
                client.call_tool("health_check")
            rtt = []
            for _ in range(calls):
                t0 = time.perf_counter()
                client.call_tool("health_check")
                rtt.append(time.perf_counter() - t0)
        fresh = []
        for _ in range(calls // 10):
            t0 = time.perf_counter()
            with DaemonClient(paths) as client:
                client.call_tool("health_check")
            fresh.append(time.perf_counter() - t0)
    finally:
        stop(paths)

    write_report(
        f"daemon-{args.backend}",
        {
            "backend": args.backend,
            "cold_start_to_first_health_check": summarise(cold),
            "health_check_round_trip_open_connection": summarise(rtt),
            "health_check_with_fresh_connection": summarise(fresh),
        },
    )


if __name__ == "__main__":
    main()
