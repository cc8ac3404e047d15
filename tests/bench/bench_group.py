"""Issue 14 figures: search for a brand-new agent over 1,000,000 messages in both visibility modes,
and a broadcast to 100 agents.

    python tests/bench/bench_group.py [--messages N] [--keep DIR] [--rounds R] [--backend asyncio|trio]

1. Builds (or reuses with --keep) the search bench's mailbox (tests/bench/bench_search.py: N messages,
   50 agents, realistic text), registers a brand-new agent "FreshJoiner" in its project, and times
   search_messages over the search bench's query set as that agent with MESSAGE_VISIBILITY=project,
   then again after restarting the daemon with MESSAGE_VISIBILITY=participants. For context it also
   times Agent00 (about 60,000 messages of its own at 1M) in participants mode.
2. In a fresh mailbox, registers 101 agents and times send_message(broadcast=true) from one of them
   (the default cap, 100 recipients), one call at a time, with the archive running.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from shared.client import DaemonClient
from shared.paths import MailboxPaths
from tests.bench.bench_search import QUERIES, build
from tests.bench.common import stop, summarise, temp_mailbox, write_report


def time_search(client: DaemonClient, rounds: int) -> dict[str, Any]:
    samples: list[float] = []
    counts = {}
    for name, args in QUERIES:  # warm-up
        counts[name] = len(client.call_tool("search_messages", {"project_key": "bench", **args})["result"])
    for _ in range(rounds):
        for _name, args in QUERIES:
            t0 = time.perf_counter()
            client.call_tool("search_messages", {"project_key": "bench", **args})
            samples.append(time.perf_counter() - t0)
    return {**summarise(samples), "results_per_query": counts}


def search_figures(paths: MailboxPaths, rounds: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for mode in ("project", "participants"):
        os.environ["MESSAGE_VISIBILITY"] = mode  # inherited by the auto-started daemon
        try:
            with DaemonClient(paths, hello={"session": "bench-fresh", "client": "bench"}) as fresh:
                fresh.call_tool("register_agent", {"project_key": "bench", "program": "bench", "model": "none",
                                                   "name": "FreshJoiner"})
                figures[f"search_messages_new_agent_{mode}"] = time_search(fresh, rounds)
            if mode == "project":  # the reference: the operator reads everything, no visibility rule
                with DaemonClient(paths) as operator:
                    figures["search_messages_operator"] = time_search(operator, rounds)
            if mode == "participants":
                with DaemonClient(paths, hello={"session": "bench-agent", "client": "bench"}) as busy:
                    figures["search_messages_agent00_participants"] = time_search(busy, max(1, rounds // 2))
        finally:
            stop(paths)
    os.environ.pop("MESSAGE_VISIBILITY", None)
    return figures


def broadcast_figures(sends: int) -> dict[str, Any]:
    paths = temp_mailbox("broadcast")
    clients = []
    try:
        for i in range(101):
            client = DaemonClient(paths, hello={"session": f"bc-{i}", "client": "bench"})
            client.call_tool("register_agent", {"project_key": "crowd", "program": "bench", "model": "none",
                                                "name": f"Crowd{i:03d}"})
            clients.append(client)
        sender = clients[0]
        samples: list[float] = []
        recipients = 0
        for n in range(sends):
            t0 = time.perf_counter()
            result = sender.call_tool("send_message", {"project_key": "crowd", "subject": f"standup {n}",
                                                       "body_md": "status, please", "broadcast": True})
            samples.append(time.perf_counter() - t0)
            recipients = result["recipient_count"]
        single: list[float] = []  # the reference: the same sender, one recipient
        for n in range(sends):
            t0 = time.perf_counter()
            sender.call_tool("send_message", {"project_key": "crowd", "subject": f"note {n}", "body_md": "status",
                                              "to": "Crowd001"})
            single.append(time.perf_counter() - t0)
        return {"broadcast_to_100": {**summarise(samples), "recipients": recipients},
                "send_to_1": summarise(single)}
    finally:
        for client in clients:
            client.close()
        stop(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="reuse/keep the built mailbox at this root")
    parser.add_argument("--rounds", type=int, default=10, help="passes over the query set per mode")
    parser.add_argument("--sends", type=int, default=200, help="broadcasts to time")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    os.environ["AGENT_MAIL_BACKEND"] = args.backend
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        paths = MailboxPaths(args.keep)
    else:
        paths = temp_mailbox("group")
    paths.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not paths.db.exists():
        print(f"building {args.messages:,} messages in {paths.db}")
        build(paths.db, args.messages)
    figures = {"backend": args.backend, "messages": args.messages, **search_figures(paths, args.rounds),
               **broadcast_figures(args.sends)}
    write_report("group" if args.messages >= 1_000_000 else f"group-{args.messages}", figures)


if __name__ == "__main__":
    main()
