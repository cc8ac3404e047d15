"""Issue 4 figures: archive throughput, archive lag under send load, send latency archive on vs off.

    python tests/bench/bench_archive.py [--quick]

Targets: >= 2,000 messages/s committed in groups; lag p99 <= 1 s while 16 clients offer a fixed,
paced load of 1,500 sends/s (the achieved rate is reported next to it; a run at 200 sends/s shows
the lag when the daemon is not saturated); send latency with the
archive on equal (within noise) to off, both one client alone and under that paced load.
Lag is measured by the daemon per outbox row: commit-confirmed time minus the row's DB commit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
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


def paced_load(paths: MailboxPaths, rate: float, seconds: float, clients: int = 16) -> dict[str, object]:
    """Offer `rate` sends/s in total from `clients` threads on a fixed schedule (open loop: a late
    send is sent at once, never skipped), and report the achieved rate and per-send latency."""
    conns = [agent(paths, f"Paced{i}") for i in range(clients)]
    interval = clients / rate
    total = int(rate * seconds)
    barrier = threading.Barrier(clients + 1)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = [0.0]

    def run(index: int, conn: DaemonClient) -> None:
        barrier.wait()
        sends = range(index, total, clients)
        for k, _ in enumerate(sends):
            due = start[0] + index * interval / clients + k * interval
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t0 = time.perf_counter()
            conn.call_tool("send_message", MESSAGE)
            latencies[index].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    start[0] = time.perf_counter() + 0.05
    barrier.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start[0]
    for c in conns:
        c.close()
    flat = [x for per in latencies for x in per]
    return {"offered_per_s": rate, "achieved_per_s": round(len(flat) / elapsed, 1), "sends": len(flat),
            "seconds": round(elapsed, 2), "send_latency": summarise(flat)}


def lag_at(rate: float, seconds: float, archive: bool) -> dict[str, object]:
    os.environ["AGENT_MAIL_ARCHIVE_ENABLED"] = "true" if archive else "false"
    paths = temp_mailbox("lag")
    try:
        agent(paths, "Bob").close()
        if archive:
            wait_drained(paths)
        figures = paced_load(paths, rate, seconds)
        if archive:
            t0 = time.perf_counter()
            report = wait_drained(paths)
            archive_report = report["archive"]
            assert isinstance(archive_report, dict)
            figures.update({
                "archive_lag_p50_seconds": archive_report["lag_p50_seconds"],
                "archive_lag_p99_seconds": archive_report["lag_p99_seconds"],
                "archive_lag_max_seconds": archive_report["lag_max_seconds"],
                "lag_samples": archive_report["lag_samples"],
                "drain_after_load_seconds": round(time.perf_counter() - t0, 3),
                "commits": archive_report["commits"],
            })
        return figures
    finally:
        stop(paths)
        os.environ.pop("AGENT_MAIL_ARCHIVE_ENABLED", None)


def timed(fn: Callable[[], object], repeat: int = 3) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1), result


def reads(repo: Path) -> dict[str, object]:
    """Issue 22: GitPython (its persistent `cat-file` object database) against the plumbing the
    archive uses, for what doctor, rebuild and whois read. Best of 3, milliseconds. GitPython is no
    longer a dependency (docs/archive.md says why): `pip install gitpython` to run the comparison."""
    from maild.archive.committer import BRANCH, head_files, read_blobs
    from maild.archive.formats import MESSAGE_FILE

    figures: dict[str, object] = {}
    ms, ours = timed(lambda: head_files(repo))
    files: list[str] = ours  # type: ignore[assignment]
    figures["list_files_plumbing_ms"] = ms
    messages = [p for p in files if MESSAGE_FILE.match(p)]
    figures["files"], figures["message_files"] = len(files), len(messages)
    ms, _ = timed(lambda: read_blobs(repo, messages))
    figures["read_messages_plumbing_ms"] = ms  # one ls-tree, then one cat-file --batch by object id
    folder = "/".join(messages[0].split("/")[:2]) if messages else "projects"
    ms, _ = timed(lambda: subprocess.run(["git", "--git-dir", str(repo), "log", "-n10", "--format=%H%x1f%s",
                                          "--", folder], capture_output=True, check=True))
    figures["recent_commits_plumbing_ms"] = ms
    try:
        import git
    except ImportError:
        figures["gitpython"] = "not installed: pip install gitpython to compare"
        return figures
    with git.Repo(repo) as gp:
        ms, theirs = timed(lambda: sorted(b.path for b in gp.tree(BRANCH).traverse()
                                          if b.type == "blob" and b.path.startswith("projects/")))
        figures["list_files_gitpython_ms"] = ms
        assert sorted(files) == theirs
        shas = {b.path: b.binsha for b in gp.tree(BRANCH).traverse() if b.type == "blob"}
        # the persistent `git cat-file --batch` behind GitPython's object database, one object a round trip
        ms, _ = timed(lambda: [gp.odb.stream(shas[p]).read() for p in messages], repeat=1)
        figures["read_messages_gitpython_ms"] = ms
        ms, _ = timed(lambda: [(c.hexsha, c.summary) for c in gp.iter_commits(BRANCH, paths=folder, max_count=10)])
        figures["recent_commits_gitpython_ms"] = ms
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller run")
    parser.add_argument("--reads-only", action="store_true", help="only the GitPython-vs-plumbing read comparison")
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
        stop(paths)
        figures["reads"] = reads(paths.archive)
    finally:
        stop(paths)
    if args.reads_only:
        write_report("archive-reads", figures)
        return

    # 2. lag at a fixed offered load of 1,500 sends/s, and the same load with the archive off
    seconds = 4.0 if args.quick else 10.0
    figures["paced_1500_archive_on"] = lag_at(1500, seconds, archive=True)
    figures["paced_1500_archive_off"] = lag_at(1500, seconds, archive=False)
    # and at a rate a small, shared machine sustains, to separate archive lag from a saturated daemon
    figures["paced_200_archive_on"] = lag_at(200, seconds, archive=True)

    # 3. send latency, archive on vs off
    samples = 500 if args.quick else 2000
    figures["send_latency_archive_on"] = send_latency(True, samples)
    figures["send_latency_archive_off"] = send_latency(False, samples)
    write_report("archive", figures)


if __name__ == "__main__":
    main()
