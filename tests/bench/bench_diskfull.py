"""Issue 13 figures: how a daemon rides out a full disk, on a real one (a 12 MB tmpfs; needs root).

    python tests/bench/bench_diskfull.py [--rounds 5] [--backend asyncio|trio]

Per round: fill the filesystem, send until a send fails (STORAGE_ERROR), then free the space and
time how long until a send succeeds again (the daemon is never restarted). Also: how long a failing
send takes to answer, and how long a client takes to report a daemon that cannot start on a full disk.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from shared.client import DaemonClient
from shared.errors import DaemonUnavailable, StorageError
from shared.paths import MailboxPaths
from tests.bench.common import stop, summarise, write_report
from tests.conftest import git_init
from tests.diskfull import fill, free, mount_tmpfs, unmount

ARGS = {"project_key": "/p", "to": "GreenCastle", "subject": "s", "body_md": "x" * 2000}


def send_until_full(conn: DaemonClient) -> tuple[int, float]:
    for sent in range(100_000):
        started = time.perf_counter()
        try:
            conn.call_tool("send_message", ARGS)
        except StorageError:
            return sent, time.perf_counter() - started
    raise RuntimeError("the disk never filled up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    os.environ["AGENT_MAIL_BACKEND"] = args.backend
    mountpoint = Path(tempfile.mkdtemp(prefix="bench-diskfull-")) / "fs"
    if not mount_tmpfs(mountpoint):
        sys.exit("cannot mount a tmpfs here (run as root): no full disk to measure")
    paths = MailboxPaths(git_init(mountpoint / "repo"))
    filler = mountpoint / "filler"
    filler.mkdir()
    try:
        conn = DaemonClient(paths, hello={"session": "bench", "client": "bench", "pid": os.getpid()})
        for name in ("BlueLake", "GreenCastle"):
            conn.call_tool("register_agent", {"project_key": "/p", "program": "b", "model": "b", "name": name,
                                              **({"sender_token": None} if False else {})})
        conn.close()
        conn = DaemonClient(paths, hello={"session": "bench", "client": "bench", "pid": os.getpid()})
        pid = conn.call_tool("health_check")["pid"]
        recover: list[float] = []
        failing: list[float] = []
        accepted: list[int] = []
        for _ in range(args.rounds):
            fill(filler)
            sent, failed_in = send_until_full(conn)
            accepted.append(sent)
            failing.append(failed_in)
            free(filler)
            freed = time.perf_counter()
            while True:
                try:
                    conn.call_tool("send_message", ARGS)
                    break
                except StorageError:
                    time.sleep(0.001)
            recover.append(time.perf_counter() - freed)
        same_daemon = conn.call_tool("health_check")["pid"] == pid
        conn.close()
        stop(paths)
        fill(filler)
        started = time.perf_counter()
        try:
            DaemonClient(paths).close()
            start_failure = "started?!"
        except DaemonUnavailable as exc:
            start_failure = exc.message
        reported_in = time.perf_counter() - started
        free(filler)
    finally:
        free(filler)
        stop(paths)
        unmount(mountpoint)
    write_report("diskfull", {
        "backend": args.backend,
        "rounds": args.rounds,
        "time_to_recover_after_space_freed": summarise(recover),
        "failing_send_latency": summarise(failing),
        "sends_accepted_after_fill": accepted,
        "daemon_survived_every_round": same_daemon,
        "start_failure_reported_ms": round(reported_in * 1000, 1),
        "start_failure_message": start_failure,
    })


if __name__ == "__main__":
    main()
