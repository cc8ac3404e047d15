"""Issue 8 figures: tools/call health_check through the HTTP bridge, 32 concurrent clients, JWT on.

    python tests/bench/bench_http.py [--quick]

Target: >= 1,000 calls/s with p99 <= 50 ms. Each client thread keeps one HTTP/1.1 connection and
sends 2026-07-28-era requests (each carries its own envelope, so no MCP session is needed).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import jwt

from shared.client import ensure_started
from tests.bench.common import stop, summarise, temp_mailbox, write_report

SECRET = "bench-secret-that-is-long-enough-for-hs256"
BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
    "name": "health_check", "arguments": {},
    "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
              "io.modelcontextprotocol/clientCapabilities": {}}}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    per_client = 30 if args.quick else 150
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    paths = temp_mailbox("http")
    paths.state_dir.mkdir(mode=0o700)
    paths.config_file.write_text(f'http_enabled = true\nhttp_port = {port}\nhttp_jwt_enabled = true\n'
                                 f'http_jwt_secret = "{SECRET}"\n')
    os.environ.pop("AGENT_MAIL_HTTP", None)
    try:
        ensure_started(paths)
        token = jwt.encode({"sub": "bench", "role": "reader", "exp": int(time.time()) + 3600}, SECRET)
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "health_check",
                   "Authorization": f"Bearer {token}"}
        latencies: list[float] = []
        lock = threading.Lock()
        barrier = threading.Barrier(args.clients + 1)

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            mine = []
            barrier.wait()
            for _ in range(per_client):
                t0 = time.perf_counter()
                conn.request("POST", "/mcp/", body=BODY, headers=headers)
                response = conn.getresponse()
                response.read()
                assert response.status == 200, response.status
                mine.append(time.perf_counter() - t0)
            conn.close()
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        write_report("http", {
            "clients": args.clients,
            "calls": len(latencies),
            "calls_per_second": round(len(latencies) / elapsed, 1),
            "latency": summarise(latencies),
        })
    finally:
        stop(paths)


if __name__ == "__main__":
    main()
