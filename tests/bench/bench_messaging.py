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

import apsw

from shared.client import DaemonClient
from shared.paths import MailboxPaths
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


def bulk_fill(paths: MailboxPaths, count: int, agent_ids: list[int], project_id: int) -> float:
    """Insert `count` messages (with recipients; FTS and counters follow by trigger) in big transactions."""
    rng = random.Random(7)
    db = apsw.Connection(str(paths.db))
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -524288")  # 512 MiB: the FTS index build is cache-bound
    db.execute("PRAGMA temp_store = MEMORY")
    started = time.perf_counter()
    batch = 50_000
    for start in range(0, count, batch):
        with db:
            for i in range(start, min(count, start + batch)):
                sender, recipient = rng.sample(agent_ids, 2)
                ts = f"2026-{1 + i * 10 // count:02d}-01T00:00:00.{i % 1000000:06d}Z"
                message_id = db.execute(
                    "INSERT INTO messages(project_id, sender_id, subject, body_md, importance, created_ts)"
                    " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                    (project_id, sender, sentence(rng, 6), sentence(rng, 40), rng.choice(["normal", "high"]), ts),
                ).get
                db.execute("INSERT INTO message_recipients(message_id, agent_id, kind) VALUES (?, ?, 'to')",
                           (message_id, recipient))
    db.close()
    return time.perf_counter() - started


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

    # 3. fetch_inbox over a big database
    paths = temp_mailbox("big")
    try:
        names = [f"Agent{i}" for i in range(20)]
        conns = [agent(paths, n, "/bench") for n in names]
        ids = [c.call_tool("whois", {"project_key": "/bench", "agent_name": n, "include_recent_commits": False})["id"]
               for c, n in zip(conns, names, strict=True)]
        project_id = conns[0].call_tool("ensure_project", {"human_key": "/bench"})["id"]
        for c in conns:
            c.close()
        stop(paths)
        figures["bulk_fill_seconds"] = round(bulk_fill(paths, big, ids, project_id), 1)
        figures["messages_in_db"] = big
        reader = DaemonClient(paths, hello={"session": "bench-Agent0", "client": "bench", "pid": os.getpid()})
        query = {"project_key": "/bench", "limit": 20}
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
