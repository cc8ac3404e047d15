"""Issue 17 figures for ack deadlines: what the overdue scanner costs, and the mailbox-with-commits view.

    python tests/bench/bench_acks.py [--quick]

- Scanner (in process, on a real store): a mailbox of N messages, 10 % of them ack_required to two
  recipients, all past the deadline. `catch_up`: scans (`log` mode, 200 messages each) until every
  pair is handled, pairs per second. `idle_scan`: one scan once everything is handled (the steady
  cost paid every ACK_TTL_SCAN_INTERVAL_SECONDS). `message_mode`: 200 overdue messages escalated in
  one scan (two reminders and a notice each, through the send path), ms per message.
- View (through a daemon): an agent with M archived messages; `resource://mailbox-with-commits` vs
  `resource://inbox` for the newest 20 and 100 (the difference is the git lookup).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from maild.services.acks import AckDeadlines
from maild.store import open_store
from shared.client import DaemonClient
from shared.config import Settings
from tests.bench.common import stop, summarise, temp_mailbox, write_report
from tests.mailrows import insert_agent, insert_message, insert_project, ts

PROJECT = "/bench-acks"


def populate(conn: Any, messages: int) -> None:
    project = insert_project(conn, "bench-acks", PROJECT)
    agents = [insert_agent(conn, project, f"Agent{i}") for i in range(50)]
    for i in range(messages):
        sender, a, b = agents[i % 50], agents[(i + 1) % 50], agents[(i + 2) % 50]
        message = insert_message(conn, project, sender, f"subject {i}", "body", to=(a, b), created_ts=ts(i / 100))
        if i % 10 == 0:
            conn.execute("UPDATE messages SET ack_required = 1 WHERE id = ?", (message,))


async def scanner(messages: int) -> dict[str, Any]:
    paths = temp_mailbox("acks-scan")
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    # The ack_overdue lines go to a file, as the daemon's do (maild.log), not to this terminal.
    logging.basicConfig(filename=paths.log_file, level=logging.INFO, force=True)
    settings = Settings(ack_ttl_enabled=True, ack_ttl_seconds=60)
    async with open_store(paths.db, settings) as store:
        await store.write(populate, messages)
        acks = AckDeadlines(store, settings)
        started, scans, pairs = time.perf_counter(), 0, 0
        while handled := await acks.scan_once():
            pairs += handled
            scans += 1
        catch_up = time.perf_counter() - started
        idle = []
        for _ in range(20):
            begin = time.perf_counter()
            await acks.scan_once()
            idle.append(time.perf_counter() - begin)
        await store.write(populate_tail, 200)
        mailing = AckDeadlines(store, dataclasses.replace(settings, ack_escalation_enabled=True,
                                                          ack_escalation_mode="message"))
        begin = time.perf_counter()
        escalated = await mailing.scan_once()
        message_mode = time.perf_counter() - begin
    return {"messages": messages, "overdue_pairs": pairs,
            "catch_up": {"scans": scans, "seconds": round(catch_up, 3), "pairs_per_s": round(pairs / catch_up)},
            "idle_scan": summarise(idle),
            "message_mode": {"messages": 200, "pairs": escalated, "seconds": round(message_mode, 3),
                             "ms_per_message": round(message_mode / 200 * 1000, 2)}}


def populate_tail(conn: Any, count: int) -> None:
    """`count` more overdue ack requests (for the message-mode round), after everything was handled."""
    agents = [r[0] for r in conn.execute("SELECT id FROM agents ORDER BY id LIMIT 3")]
    project = conn.execute("SELECT id FROM projects").fetchone()[0]
    for i in range(count):
        message = insert_message(conn, project, agents[0], f"late {i}", "body", to=(agents[1], agents[2]),
                                 created_ts=ts(-10 - i))
        conn.execute("UPDATE messages SET ack_required = 1 WHERE id = ?", (message,))


def view(archived: int, rounds: int) -> dict[str, Any]:
    paths = temp_mailbox("acks-view")
    try:
        with DaemonClient(paths, hello={"session": "bench-sender", "client": "bench"}) as sender, \
                DaemonClient(paths, hello={"session": "bench-reader", "client": "bench"}) as reader:
            sender.call_tool("register_agent", {"project_key": PROJECT, "program": "b", "model": "m",
                                                "name": "BenchSender"})
            reader.call_tool("register_agent", {"project_key": PROJECT, "program": "b", "model": "m",
                                                "name": "BenchReader"})
            for i in range(archived):
                sender.call_tool("send_message", {"project_key": PROJECT, "to": ["BenchReader"],
                                                  "subject": f"note {i}", "body_md": "b"})
            while reader.call_tool("health_check")["archive"]["queue_depth"]:
                time.sleep(0.1)
            figures: dict[str, Any] = {"archived_messages": archived}
            for limit in (20, 100):
                for name in ("inbox", "mailbox-with-commits"):
                    samples = []
                    for _ in range(rounds):
                        begin = time.perf_counter()
                        found = reader.read_resource(f"resource://{name}/BenchReader?limit={limit}")
                        samples.append(time.perf_counter() - begin)
                    if name == "mailbox-with-commits":
                        assert all(m["commit"] for m in found["messages"]), "every message is archived"
                    figures[f"{name} limit={limit}"] = summarise(samples)
            return figures
    finally:
        stop(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 messages, 300 archived, 10 rounds")
    opts = parser.parse_args()
    figures = {"scanner": anyio.run(scanner, 5_000 if opts.quick else 50_000),
               "view": view(300 if opts.quick else 2_000, 10 if opts.quick else 30)}
    write_report("bench_acks", figures)


if __name__ == "__main__":
    main()
