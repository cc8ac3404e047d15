"""Issue 4 figures: archive throughput, archive lag under send load, send latency archive on vs off.

    python tests/bench/bench_archive.py [--quick]

Targets: >= 2,000 messages/s committed in groups; lag p99 <= 1 s while sending (the issue names
1,500 sends/s; we load at this daemon's measured maximum and report that rate); send latency with
the archive on equal (within noise) to off.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from shared.client import DaemonClient, ensure_started
from shared.paths import MailboxPaths
from tests.bench.common import stop, summarise, temp_mailbox, write_report

MESSAGE = {"project_key": "/bench", "to": "Bob", "subject": "status update", "body_md": "All green. " * 30}


def agent(paths: MailboxPaths, name: str) -> DaemonClient:
    conn = DaemonClient(paths, hello={"session": f"bench-{name}", "client": "bench", "pid": os.getpid()})
    conn.call_tool("register_agent", {"project_key": "/bench", "program": "bench", "model": "none", "name": name})
    return conn


def send_latency(archive: bool, samples: int) -> dict[str, float]:
    os.environ["AGENT_MAIL_ARCHIVE_ENABLED"] = "true" if archive else "false"
    paths = temp_mailbox("latency")
    try:
        alice, bob = agent(paths, "Alice"), agent(paths, "Bob")
        for _ in range(100):
            alice.call_tool("send_message", MESSAGE)
        latencies = []
        for _ in range(samples):
            t0 = time.perf_counter()
            alice.call_tool("send_message", MESSAGE)
            latencies.append(time.perf_counter() - t0)
        alice.close()
        bob.close()
        return summarise(latencies)
    finally:
        stop(paths)
        os.environ.pop("AGENT_MAIL_ARCHIVE_ENABLED", None)


def load(paths: MailboxPaths, clients: int, per_client: int) -> float:
    conns = [agent(paths, f"Writer{i}") for i in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def run(conn: DaemonClient) -> None:
        barrier.wait()
        for _ in range(per_client):
            conn.call_tool("send_message", MESSAGE)

    threads = [threading.Thread(target=run, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    rate = clients * per_client / (time.perf_counter() - t0)
    for c in conns:
        c.close()
    return rate


def wait_drained(paths: MailboxPaths, timeout: float = 600) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    with DaemonClient(paths) as conn:
        while True:
            report = conn.call_tool("health_check")
            if report["archive"]["queue_depth"] == 0:
                return report  # type: ignore[no-any-return]
            if time.monotonic() > deadline:
                raise TimeoutError(report["archive"])
            time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller run")
    args = parser.parse_args()
    backlog = 2000 if args.quick else 20000
    figures: dict[str, object] = {}

    # 1. throughput: fill the outbox with the archiver off, then time a daemon draining it
    paths = temp_mailbox("throughput")
    try:
        os.environ["AGENT_MAIL_ARCHIVE_ENABLED"] = "false"
        agent(paths, "Bob").close()
        load(paths, 16, backlog // 16)
        stop(paths)
        os.environ.pop("AGENT_MAIL_ARCHIVE_ENABLED")
        ensure_started(paths)  # the clock starts once the daemon is up (it drains from its first moment)
        t0 = time.perf_counter()
        report = wait_drained(paths)
        elapsed = time.perf_counter() - t0
        figures["archive_backlog_messages"] = backlog
        figures["archive_throughput_messages_per_s"] = round(backlog / elapsed, 1)
        figures["archive_commits_for_backlog"] = report["archive"]["commits"]  # type: ignore[index]
    finally:
        stop(paths)

    # 2. lag while sending at full speed from 16 clients
    paths = temp_mailbox("lag")
    try:
        agent(paths, "Bob").close()
        rate = load(paths, 16, 150 if args.quick else 500)
        report = wait_drained(paths)
        figures["send_rate_during_lag_test_per_s"] = round(rate, 1)
        figures["archive_lag_p99_seconds"] = report["archive"]["lag_p99_seconds"]  # type: ignore[index]
    finally:
        stop(paths)

    # 3. send latency, archive on vs off
    samples = 500 if args.quick else 2000
    figures["send_latency_archive_on"] = send_latency(True, samples)
    figures["send_latency_archive_off"] = send_latency(False, samples)
    write_report("archive", figures)


if __name__ == "__main__":
    main()
