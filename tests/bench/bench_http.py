"""Issue 8 figures: tools/call health_check through the HTTP bridge, 32 concurrent clients, JWT on.

    python tests/bench/bench_http.py [--quick] [--client python|wrk] [--backend asyncio|trio]
                                     [--seconds N] [--profile out.svg]

Target (issue 15): >= 2,000 calls/s with p99 <= 50 ms. Every request is a 2026-07-28-era `tools/call` (it
carries its own envelope, so no MCP session is needed) with a JWT (`HTTP_JWT_ENABLED`, HS256).

Two load generators:
- `python` (default): one thread per client, each keeping one HTTP/1.1 connection. Simple and
  always available, but on a small machine the client threads take CPU from the server.
- `wrk` (Debian: `apt-get install wrk`): a C load generator with a Lua script, so nearly all of the
  CPU goes to the server. Latency percentiles come from wrk's own histogram.

The bench waits for the bridge's readiness route before it starts, counts every failed call
(refused connections, non-200 answers, JSON-RPC errors) and exits 1 if there were any: figures
from a partly failing run are not figures. `--profile` records the daemon with py-spy
(`pip install py-spy`) during the run and prints where its time goes.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import jwt

from shared.client import ensure_started
from shared.paths import read_status
from tests.bench.common import stop, summarise, temp_mailbox, write_report

SECRET = "bench-secret-that-is-long-enough-for-hs256"
BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
    "name": "health_check", "arguments": {},
    "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
              "io.modelcontextprotocol/clientCapabilities": {}}}})
TARGET_CALLS_PER_SECOND = 2000  # issue 15 (issue 8 asked for 1,000)
TARGET_P99_MS = 50.0


class BenchFailed(Exception):
    pass


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), or NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/health/readiness")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise BenchFailed(f"the bridge on port {port} was not ready within {timeout:.0f} s")
        time.sleep(0.05)


def headers_for(token: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "health_check",
            "Authorization": f"Bearer {token}"}


def run_python(port: int, token: str, clients: int, seconds: float) -> dict[str, Any]:
    headers = headers_for(token)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client() -> None:
        mine: list[float] = []
        failures: list[str] = []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        barrier.wait()
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/mcp/", body=BODY, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                if response.status != 200 or b'"result"' not in payload:
                    failures.append(f"HTTP {response.status}: {payload[:200]!r}")
            except OSError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            mine.append(time.perf_counter() - t0)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors.extend(failures)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise BenchFailed(f"{len(errors)} of {len(errors) + len(latencies)} calls failed, e.g. {errors[0]}")
    return {"calls": len(latencies), "calls_per_second": round(len(latencies) / elapsed, 1),
            "latency": summarise(latencies)}


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%(body)s]]
%(headers)s
failed = 0
response = function(status, headers, body)
  if status ~= 200 or not string.find(body, '"result"', 1, true) then failed = failed + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("CALLS %%d\\n", summary.requests))
  io.write(string.format("ERRORS %%d %%d %%d %%d %%d\\n", summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout))
  for _, p in pairs({50, 90, 95, 99}) do
    io.write(string.format("P%%d %%.3f\\n", p, latency:percentile(p) / 1000.0))
  end
  io.write(string.format("MAX %%.3f\\n", latency.max / 1000.0))
end
"""


def run_wrk(port: int, token: str, clients: int, seconds: float) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchFailed("wrk is not installed (Debian: apt-get install wrk); or use --client python")
    headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers_for(token).items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"body": BODY, "headers": headers})
    try:
        # One wrk thread: on a small machine every extra thread competes with the server.
        result = subprocess.run([wrk, "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "10s", "-s", script.name,
                                 f"http://127.0.0.1:{port}/mcp/"], capture_output=True, text=True, check=False)
    finally:
        Path(script.name).unlink()
    out = result.stdout
    if result.returncode != 0 or "CALLS" not in out:
        raise BenchFailed(f"wrk failed: {result.stderr or out}")
    errors = [int(x) for x in re.search(r"ERRORS (\d+) (\d+) (\d+) (\d+) (\d+)", out).groups()]  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    calls = int(re.search(r"CALLS (\d+)", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    if sum(errors) or non_2xx:
        raise BenchFailed(f"wrk saw failures (connect/read/write/status/timeout = {errors}); output:\n{out}")
    latency = {f"p{p}_ms": float(re.search(rf"P{p} ([\d.]+)", out).group(1))  # type: ignore[union-attr]
               for p in (50, 90, 95, 99)}
    latency["max_ms"] = float(re.search(r"MAX ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"calls": calls, "calls_per_second": rate, "latency": latency}


def check_result_bodies(port: int, token: str) -> None:
    """wrk only sees status codes in bulk: make sure one call really answers health_check."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/mcp/", body=BODY, headers=headers_for(token))
        response = conn.getresponse()
        payload = json.loads(response.read())
    finally:
        conn.close()
    if response.status != 200 or payload.get("result", {}).get("structuredContent", {}).get("status") != "ok":
        raise BenchFailed(f"health_check did not answer ok: {response.status} {payload}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3-second run")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--client", choices=["python", "wrk"], default="python")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--profile", metavar="FILE",
                        help="record the daemon with py-spy: a flame graph (.svg) or collapsed stacks (.txt)")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    paths = temp_mailbox("http")
    paths.state_dir.mkdir(mode=0o700)
    paths.config_file.write_text(f'http_enabled = true\nhttp_port = {port}\nhttp_jwt_enabled = true\n'
                                 f'http_jwt_secret = "{SECRET}"\n')
    os.environ.pop("AGENT_MAIL_HTTP", None)
    os.environ["AGENT_MAIL_BACKEND"] = args.backend
    profiler: subprocess.Popen[bytes] | None = None
    try:
        ensure_started(paths)
        wait_ready(port)
        token = jwt.encode({"sub": "bench", "role": "reader", "exp": int(time.time()) + 3600}, SECRET)
        check_result_bodies(port, token)
        run = run_wrk if args.client == "wrk" else run_python
        run(port, token, args.clients, 1.0)  # warm-up: connections, caches, first-call imports
        pid = int((read_status(paths) or {})["pid"])
        if args.profile:
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            fmt = "raw" if args.profile.endswith(".txt") else "flamegraph"  # raw = collapsed stacks
            profiler = subprocess.Popen([spy, "record", "--pid", str(pid), "--output", args.profile,
                                         "--format", fmt, "--rate", "200", "--nonblocking"],
                                        stdout=subprocess.DEVNULL)
        cpu_before = cpu_seconds(pid)
        figures = run(port, token, args.clients, seconds)
        # The daemon's own CPU per call: what the server costs, whatever else runs on the machine.
        figures["daemon_cpu_us_per_call"] = round((cpu_seconds(pid) - cpu_before) / figures["calls"] * 1e6, 1)
    except BenchFailed as exc:
        print(f"bench_http: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=60)
        stop(paths)
    met = figures["calls_per_second"] >= TARGET_CALLS_PER_SECOND and figures["latency"]["p99_ms"] <= TARGET_P99_MS
    write_report(f"http-{args.client}", {
        "client": args.client, "backend": args.backend, "clients": args.clients, "seconds": seconds,
        **figures, "target": {"calls_per_second": TARGET_CALLS_PER_SECOND, "p99_ms": TARGET_P99_MS, "met": met},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
