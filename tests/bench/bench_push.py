"""Issue 17 figures: wait_for_mail wake-up latency, the cost of idle waiters, the unread hint's size.

    python tests/bench/bench_push.py [--quick]

- Wake-up: 64 connections bound to one agent each wait (wait_for_mail); another agent sends one
  message. `commit_to_answer` (what the issue targets): from the sending commit (time.monotonic()
  on the daemon's writer thread right after COMMIT, which health_check reports as
  wait_for_mail.last_commit_monotonic; CLOCK_MONOTONIC is one clock for all processes on Linux) to
  each waiter's answer arriving here. `send_to_answer` (the earlier figure, an upper bound): from
  the send request leaving the client. Repeated over rounds; p50/p99 over every waiter of every
  round. Targets p50 <= 5 ms, p99 <= 20 ms.
- Idle: 1,000 connections each with a pending wait_for_mail; the daemon's RSS before and after they
  register, and its CPU time (utime + stime) over 5 idle seconds. Target <= 20 MB and no CPU.
- The unread hint: bytes (and tokens, bytes / 4) the `_meta` entry adds to a tool result.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from shared.client import DaemonClient, envelope_meta
from shared.paths import MailboxPaths, read_status
from tests.bench.bench_shim import rss_mb
from tests.bench.common import stop, summarise, temp_mailbox, write_report

PROJECT = "/bench-push"


class Waiter:
    def __init__(self, paths: MailboxPaths, agent: str, token: str, n: int) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(paths.socket))
        self.buffer = b""
        self.next_id = 0
        self.send({"jsonrpc": "2.0", "method": "maild/hello",
                   "params": {"session": f"waiter-{n}", "agent": agent, "token": token, "client": "bench"}})

    def send(self, frame: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(frame).encode() + b"\n")

    def wait(self, since_id: int, patience: int = 300) -> None:
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call", "params": {
            "name": "wait_for_mail", "_meta": envelope_meta(),
            "arguments": {"project_key": PROJECT, "since_id": since_id, "timeout_seconds": patience}}})

    def line(self) -> bytes | None:
        """A complete answer line if one has arrived (call after select says readable)."""
        self.buffer += self.sock.recv(1 << 20)
        if b"\n" not in self.buffer:
            return None
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line


def register(paths: MailboxPaths, name: str) -> tuple[DaemonClient, str]:
    conn = DaemonClient(paths, hello={"session": f"bench-{name}", "client": "bench"})
    found = conn.call_tool("register_agent", {"project_key": PROJECT, "program": "b", "model": "m", "name": name})
    return conn, found["registration_token"]


def waiting(conn: DaemonClient) -> int:
    return int(conn.call_tool("health_check", {})["wait_for_mail"]["waiters"])


def until_waiting(conn: DaemonClient, n: int) -> None:
    deadline = time.monotonic() + 60
    while waiting(conn) != n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {waiting(conn)} of {n} waiters registered")
        time.sleep(0.005)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wake_latency(paths: MailboxPaths, rounds: int) -> dict[str, Any]:
    alice, _ = register(paths, "Alice")
    bob, bob_token = register(paths, "Bob")
    waiters = [Waiter(paths, "Bob", bob_token, n) for n in range(64)]
    samples, sends, from_commit = [], [], []
    last_id = 0
    status = read_status(paths)
    assert status is not None
    pid = int(status["pid"])
    cpu0 = cpu_seconds(pid)
    for _ in range(rounds):
        for w in waiters:
            w.wait(last_id)
        until_waiting(bob, 64)
        t0 = time.monotonic()
        sent = alice.call_tool("send_message", {"project_key": PROJECT, "to": "Bob", "subject": "s", "body_md": "b"})
        sends.append(time.monotonic() - t0)
        last_id = int(sent["deliveries"][0]["payload"]["id"])
        pending = {w.sock: w for w in waiters}
        arrivals = []
        while pending:
            readable, _, _ = select.select(list(pending), [], [], 30)
            now = time.monotonic()
            for sock in readable:
                if pending[sock].line() is not None:
                    arrivals.append(now)
                    del pending[sock]
        samples += [t - t0 for t in arrivals]
        committed = float(bob.call_tool("health_check", {})["wait_for_mail"]["last_commit_monotonic"])
        assert t0 < committed < min(arrivals), "the commit time must fall between the send and the answers"
        from_commit += [t - committed for t in arrivals]
    # Daemon CPU per round (64 waits registered + 1 send + 64 answers + the health polls): a figure
    # a loaded machine does not inflate the way it inflates latencies.
    cpu_per_round_ms = round((cpu_seconds(pid) - cpu0) / rounds * 1000, 2)
    for w in waiters:
        w.sock.close()
    alice.close()
    bob.close()
    return {"waiters": 64, "rounds": rounds, "commit_to_answer": summarise(from_commit),
            "send_to_answer": summarise(samples), "send_round_trip": summarise(sends),
            "daemon_cpu_ms_per_round": cpu_per_round_ms, "load_average": os.getloadavg()[0]}


def idle_cost(paths: MailboxPaths, count: int) -> dict[str, Any]:
    probe, token = register(paths, "Idle")
    status = read_status(paths)
    assert status is not None
    pid = int(status["pid"])
    time.sleep(1)
    before = rss_mb(pid)
    cpu0 = cpu_seconds(pid)
    time.sleep(5)
    baseline_cpu = cpu_seconds(pid) - cpu0  # what the daemon spends idle with no waiters (sweepers)
    waiters = [Waiter(paths, "Idle", token, n) for n in range(count)]
    for w in waiters:
        w.wait(10**9)
    until_waiting(probe, count)
    time.sleep(1)
    after = rss_mb(pid)
    cpu0 = cpu_seconds(pid)
    time.sleep(5)
    cpu = cpu_seconds(pid) - cpu0
    for w in waiters:
        w.sock.close()
    probe.close()
    return {"waiters": count, "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1),
            "rss_added_mb": round(after - before, 1), "cpu_seconds_over_5s_idle": round(cpu, 3),
            "cpu_seconds_over_5s_without_waiters": round(baseline_cpu, 3)}


def hint_size() -> dict[str, Any]:
    entry = {"agent_mail/unread": {"count": 3, "urgent": 1}}
    added = len(b',"_meta":') + len(json.dumps(entry, separators=(",", ":")).encode())
    return {"example": entry, "bytes": added, "tokens_bytes_over_4": round(added / 4, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, 200 idle waiters")
    opts = parser.parse_args()
    paths = temp_mailbox("push")
    try:
        figures = {"wake": wake_latency(paths, 10 if opts.quick else 50),
                   "idle": idle_cost(paths, 200 if opts.quick else 1000), "unread_hint": hint_size()}
    finally:
        stop(paths)
    print(json.dumps(figures, indent=2))
    print(f"report: {write_report('bench_push', figures)}")


if __name__ == "__main__":
    main()
