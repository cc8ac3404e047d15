"""Issue 15 figures, SDK path and lean path measured side by side in one run.

    python tests/bench/bench_fast_path.py [--quick] [--skip-http]

For each of `transport_fast_path = false` (every request through the SDK) and `true` (the lean
dispatcher): send_message p50 from one client, sends/s from 16 concurrent clients on the socket,
and HTTP calls/s + p99 with wrk (32 connections, JWT, 2026-07-28 `tools/call health_check`).
Then, with the default settings: cold start to the first health_check, the idle daemon's RSS,
shim spawn -> initialize with a warm daemon, and the daemon's RSS during and after one client
pipelining 60,000 health_check frames without reading the answers (issue 13, item 1).
Targets: >= 1,500 sends/s, send p50 <= 0.8 ms, HTTP >= 2,000 calls/s with p99 <= 50 ms, shim
<= 60 ms p50, idle RSS <= 80 MB, cold start <= 350 ms.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import select
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from shared.client import DaemonClient, ensure_started, envelope_meta
from shared.paths import read_status
from tests.bench import bench_http
from tests.bench.bench_messaging import agent
from tests.bench.bench_shim import finish, initialize, rss_mb, spawn
from tests.bench.common import stop, summarise, temp_mailbox, write_report

MESSAGE = {"project_key": "/bench", "to": "Bob", "subject": "status", "body_md": "a short status update " * 10}


def socket_figures(fast_path: bool, samples: int, per_client: int) -> dict[str, Any]:
    os.environ["AGENT_MAIL_TRANSPORT_FAST_PATH"] = "true" if fast_path else "false"
    paths = temp_mailbox("fast")
    try:
        alice, bob = agent(paths, "Alice", "/bench"), agent(paths, "Bob", "/bench")
        for _ in range(100):
            alice.call_tool("send_message", MESSAGE)
        latencies = []
        for _ in range(samples):
            t0 = time.perf_counter()
            alice.call_tool("send_message", MESSAGE)
            latencies.append(time.perf_counter() - t0)
        clients = [agent(paths, f"Writer{i}", "/bench") for i in range(16)]
        barrier = threading.Barrier(17)

        def load(conn: DaemonClient) -> None:
            barrier.wait()
            for _ in range(per_client):
                conn.call_tool("send_message", MESSAGE)

        threads = [threading.Thread(target=load, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        pid = int((read_status(paths) or {})["pid"])
        cpu_before = bench_http.cpu_seconds(pid)
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        cpu = bench_http.cpu_seconds(pid) - cpu_before
        for c in [alice, bob, *clients]:
            c.close()
        # The daemon's own CPU per send: what the server costs, whatever else loads the machine.
        return {"send_message": summarise(latencies),
                "sends_per_second_16_clients": round(16 * per_client / elapsed, 1),
                "daemon_cpu_us_per_send_16_clients": round(cpu / (16 * per_client) * 1e6, 1)}
    finally:
        stop(paths)
        os.environ.pop("AGENT_MAIL_TRANSPORT_FAST_PATH", None)


def http_figures(fast_path: bool, seconds: float) -> dict[str, Any]:
    import jwt

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    paths = temp_mailbox("fast-http")
    paths.state_dir.mkdir(mode=0o700)
    paths.config_file.write_text(f'http_enabled = true\nhttp_port = {port}\nhttp_jwt_enabled = true\n'
                                 f'http_jwt_secret = "{bench_http.SECRET}"\n'
                                 f'transport_fast_path = {"true" if fast_path else "false"}\n')
    try:
        ensure_started(paths)
        bench_http.wait_ready(port)
        token = jwt.encode({"sub": "bench", "role": "reader", "exp": int(time.time()) + 3600}, bench_http.SECRET)
        bench_http.check_result_bodies(port, token)
        bench_http.run_wrk(port, token, 32, 1.0)
        pid = int((read_status(paths) or {})["pid"])
        cpu_before = bench_http.cpu_seconds(pid)
        figures = bench_http.run_wrk(port, token, 32, seconds)
        cpu = bench_http.cpu_seconds(pid) - cpu_before
        return {"calls_per_second": figures["calls_per_second"], "p50_ms": figures["latency"]["p50_ms"],
                "p99_ms": figures["latency"]["p99_ms"],
                "daemon_cpu_us_per_call": round(cpu / figures["calls"] * 1e6, 1)}
    finally:
        stop(paths)


def daemon_figures(cold_runs: int, shim_runs: int) -> dict[str, Any]:
    cold, cold_cpu, idle = [], [], []
    for _ in range(cold_runs):
        paths = temp_mailbox("fast-cold")
        t0 = time.perf_counter()
        with DaemonClient(paths) as client:
            client.call_tool("health_check")
            cold.append(time.perf_counter() - t0)
            # CPU the daemon spent from exec to its first answer: start-up cost without the machine's load.
            cold_cpu.append(bench_http.cpu_seconds(int((read_status(paths) or {})["pid"])))
        time.sleep(0.5)
        idle.append(rss_mb(int((read_status(paths) or {})["pid"])))
        stop(paths)
    paths = temp_mailbox("fast-shim")
    try:
        ensure_started(paths)
        warm = []
        for _ in range(shim_runs):
            t0 = time.perf_counter()
            proc = spawn(paths)
            initialize(proc)
            warm.append(time.perf_counter() - t0)
            finish(proc)
        pid = int((read_status(paths) or {})["pid"])
        pipeline = pipeline_rss(paths, pid)
    finally:
        stop(paths)
    return {"cold_start_to_first_health_check": summarise(cold),
            "cold_start_daemon_cpu": summarise(cold_cpu), "idle_rss_mb_max": round(max(idle), 1),
            "shim_spawn_to_initialize_warm": summarise(warm), "pipeline_60000_frames": pipeline}


def pipeline_rss(paths: Any, pid: int) -> dict[str, Any]:
    """One client writes 60,000 health_check frames and reads nothing; RSS before, during, after."""
    before = rss_mb(pid)
    params = {"name": "health_check", "arguments": {}, "_meta": envelope_meta()}
    frame = (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}) + "\n").encode()
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(paths.socket))
    sock.setblocking(False)
    pending, written, peak = frame * 60_000, 0, before
    while pending:
        _, writable, _ = select.select([], [sock], [], 3.0)
        peak = max(peak, rss_mb(pid))
        if not writable:
            break
        try:
            sent = sock.send(pending[:262144])
        except BlockingIOError:
            continue
        pending, written = pending[sent:], written + sent
    t0 = time.perf_counter()
    with DaemonClient(paths) as other:
        other.call_tool("health_check")
    other_ms = (time.perf_counter() - t0) * 1000
    sock.close()
    time.sleep(1.0)
    return {"rss_before_mb": round(before, 1), "rss_during_peak_mb": round(peak, 1),
            "rss_after_close_mb": round(rss_mb(pid), 1), "frames_accepted_before_stall": written // len(frame),
            "other_client_health_check_ms": round(other_ms, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples, 3-second HTTP runs")
    parser.add_argument("--skip-http", action="store_true", help="no wrk runs (wrk not installed)")
    args = parser.parse_args()
    samples, per_client, seconds = (300, 100, 3.0) if args.quick else (2000, 300, 10.0)
    # A pip install byte-compiles the package; an editable checkout (or PYTHONDONTWRITEBYTECODE)
    # would otherwise re-compile every changed module at each cold start (as bench_hooks does).
    root = Path(__file__).resolve().parents[2]
    for package in ("maild", "shared", "mailctl"):
        compileall.compile_dir(root / package, quiet=1)
    figures: dict[str, Any] = {}
    for fast_path in (False, True):
        label = "lean_path" if fast_path else "sdk_path"
        figures[label] = {"socket": socket_figures(fast_path, samples, per_client)}
        if not args.skip_http:
            figures[label]["http_wrk_32_jwt"] = http_figures(fast_path, seconds)
    figures["daemon"] = daemon_figures(3 if args.quick else 10, 5 if args.quick else 20)
    write_report("fast-path", figures)


if __name__ == "__main__":
    main()
