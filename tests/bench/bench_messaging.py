"""Issue 3 figures: send latency, fetch_inbox over a 1,000,000-message database, 16-client throughput.

    python tests/bench/bench_messaging.py [--quick] [--messages N] [--backend asyncio|trio]

Targets: send_message p50 <= 2 ms, p99 <= 10 ms (idle daemon); fetch_inbox(limit=20) p50 <= 2 ms
with 1,000,000 messages; >= 1,500 sends/s from 16 concurrent clients. Everything goes through the
real daemon's socket; only the bulk fixture is written straight into the database file.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from shared.client import DaemonClient
from shared.paths import MailboxPaths
from tests.bench.bench_search import build
from tests.bench.common import stop, summarise, temp_mailbox, write_report

WORDS = (
    "auth token refresh deploy pipeline flaky test migration schema index cache latency review merge branch "
    "rebase conflict lint typing release hotfix rollback metrics alert dashboard queue worker retry timeout "
    "socket daemon archive commit thread reply inbox search budget summary owner blocker estimate"
).split()


def agent(paths: MailboxPaths, name: str, project: str) -> DaemonClient:
    conn = DaemonClient(paths, hello={"session": f"bench-{name}", "client": "bench", "pid": os.getpid()})
    conn.call_tool("register_agent", {"project_key": project, "program": "bench", "model": "none", "name": name})
    return conn


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller run: 100k messages, fewer samples")
    parser.add_argument("--messages", type=int, help="messages in the big database (default 1,000,000)")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    os.environ["AGENT_MAIL_BACKEND"] = args.backend
    big = args.messages or (100_000 if args.quick else 1_000_000)
    samples = 500 if args.quick else 3000
    figures: dict[str, object] = {"backend": args.backend}

    # 1. send latency on an idle daemon
    paths = temp_mailbox("send")
    try:
        alice, bob = agent(paths, "Alice", "/bench"), agent(paths, "Bob", "/bench")
        message = {"project_key": "/bench", "to": "Bob", "subject": "status", "body_md": sentence(random.Random(1), 60)}
        for _ in range(100):
            alice.call_tool("send_message", message)
        latencies = []
        for _ in range(samples):
            t0 = time.perf_counter()
            alice.call_tool("send_message", message)
            latencies.append(time.perf_counter() - t0)
        figures["send_message_one_recipient"] = summarise(latencies)

        # 2. aggregate throughput, 16 clients each bound to its own agent
        clients = [agent(paths, f"Writer{i}", "/bench") for i in range(16)]
        per_client = 150 if args.quick else 400
        barrier = threading.Barrier(17)

        def load(conn: DaemonClient) -> None:
            barrier.wait()
            for _ in range(per_client):
                conn.call_tool("send_message", message)

        threads = [threading.Thread(target=load, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        figures["sends_per_second_16_clients"] = round(16 * per_client / elapsed, 1)
        for c in [alice, bob, *clients]:
            c.close()
    finally:
        stop(paths)

    # 3. fetch_inbox over a big database of realistic text (bench_search's builder: 50 agents,
    # 1-3 recipients a message, FTS triggers on), read by a session bound to one of its agents.
    paths = temp_mailbox("big")
    paths.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        built = build(paths.db, big)
        figures["bulk_fill_seconds"] = round(time.perf_counter() - started, 1)
        figures["messages_in_db"] = built["messages"]
        reader = DaemonClient(paths, hello={"session": "bench-agent", "client": "bench", "pid": os.getpid()})
        query = {"project_key": "bench", "limit": 20}
        for _ in range(50):
            reader.call_tool("fetch_inbox", query)
        latencies = []
        for _ in range(samples):
            t0 = time.perf_counter()
            result = reader.call_tool("fetch_inbox", query)
            latencies.append(time.perf_counter() - t0)
        assert len(result["result"]) == 20
        figures["fetch_inbox_limit_20"] = summarise(latencies)
        figures["fetch_inbox_unread_count"] = result["unread_count"]
        reader.close()
    finally:
        stop(paths)
    write_report(f"messaging-{args.backend}", figures)


if __name__ == "__main__":
    main()
