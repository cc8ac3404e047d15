"""Issue 21 figures: the remote shim's overhead, and 200 remote agents with think time on one bridge.

    python tests/bench/bench_remote.py [--quick] [--agents 200] [--rate 5] [--seconds 20] [--processes 4]

1. Shim overhead (target <= 2 ms p50 on loopback): the same session-path `tools/call health_check`,
   sequentially, (a) POSTed straight to the bridge over one keep-alive connection, and (b) written to
   `mailctl mcp --remote URL` on stdin and read back from its stdout. Overhead = p50(b) - p50(a).
2. Scale (target p99 <= 100 ms at 200 agents x 5 calls/s): each agent is a thread with its own
   keep-alive connection and its own bearer-token session; between calls it thinks for an
   exponentially distributed time of mean 1/rate s. Agents are spread over `--processes` load
   processes so one client GIL does not cap the load — or, by default when installed, one `wrk`
   process (C) with a Lua script doing the same (one connection per agent, `delay` = think time),
   which leaves the CPU to the daemon. Calls alternate `fetch_inbox` and `health_check` (stateless,
   2026-07-28 envelope). Reports p50/p99, errors, calls/s, the daemon's RSS and its CPU per call
   (which does not depend on the machine's load, unlike latency).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from shared.client import DaemonClient
from shared.paths import MailboxPaths, read_status
from tests.bench.common import stop, summarise, temp_mailbox, write_report

TOKEN = "bench-remote-token-0123456789"
PROJECT = "/bench/remote"
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
TARGET_OVERHEAD_MS = 2.0
TARGET_P99_MS = 100.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(paths: MailboxPaths) -> int:
    port = free_port()
    paths.state_dir.mkdir(mode=0o700, exist_ok=True)
    paths.config_file.write_text(f'http_enabled = true\nhttp_port = {port}\nhttp_bearer_token = "{TOKEN}"\n')
    with DaemonClient(paths) as conn:
        conn.call_tool("health_check")
        conn.call_tool("ensure_project", {"human_key": PROJECT})
    deadline = time.monotonic() + 30
    while True:
        try:
            conn2 = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn2.request("GET", "/health/readiness")
            if conn2.getresponse().status == 200:
                return port
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the bridge did not come up")
        time.sleep(0.05)


def initialize_frame(request_id: Any = 0) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}


def call_frame(request_id: int, name: str = "health_check", arguments: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                       "params": {"name": name, "arguments": arguments or {}}}).encode()


def direct(port: int, calls: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "Authorization": f"Bearer {TOKEN}"}
    conn.request("POST", "/mcp/", body=json.dumps(initialize_frame()), headers=headers)
    reply = conn.getresponse()
    reply.read()
    session = {**headers, "Mcp-Session-Id": reply.getheader("mcp-session-id") or "",
               "MCP-Protocol-Version": "2025-11-25"}
    conn.request("POST", "/mcp/", body=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                 headers=session)
    conn.getresponse().read()
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        conn.request("POST", "/mcp/", body=call_frame(i + 1), headers=session)
        body = conn.getresponse().read()
        samples.append(time.perf_counter() - started)
        assert b'"result"' in body, body[:200]
    conn.close()
    return samples


def through_shim(port: int, calls: int) -> list[float]:
    env = {**os.environ, "AGENT_MAIL_HTTP_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "mailctl", "mcp", "--remote", f"http://127.0.0.1:{port}/mcp/"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(json.dumps(initialize_frame()).encode() + b"\n")
    proc.stdin.flush()
    proc.stdout.readline()
    proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        proc.stdin.write(call_frame(i + 1) + b"\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        samples.append(time.perf_counter() - started)
        assert b'"result"' in line, line[:200]
    proc.stdin.close()
    proc.wait(30)
    proc.stdout.close()
    return samples


def agent_load(args: tuple[int, int, float, float, int]) -> tuple[list[float], int, int]:
    """One load process: `agents` threads, each a remote agent with think time; (latencies, errors, calls)."""
    import threading

    port, agents, rate, seconds, first = args
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def agent(index: int) -> None:
        rng = random.Random(index)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "Authorization": f"Bearer {TOKEN}", "MCP-Protocol-Version": "2026-07-28",
                   "Mcp-Method": "tools/call"}
        mine: list[float] = []
        failures = 0
        time.sleep(rng.random() / rate)  # spread the agents' first calls over one period
        i = 0
        while time.monotonic() < deadline:
            name = "fetch_inbox" if i % 2 else "health_check"
            arguments = {"project_key": PROJECT, "agent_name": "HumanOperator", "limit": 5} if i % 2 else {}
            body = json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                               "params": {"name": name, "arguments": arguments, "_meta": META}})
            started = time.perf_counter()
            try:
                conn.request("POST", "/mcp/", body=body, headers={**headers, "Mcp-Name": name})
                response = conn.getresponse()
                payload = response.read()
                if response.status != 200 or b'"error"' in payload[:200]:
                    failures += 1
            except (OSError, http.client.HTTPException):
                failures += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - started)
            i += 1
            time.sleep(rng.expovariate(rate))
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failures

    threads = [threading.Thread(target=agent, args=(first + n,)) for n in range(agents)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0], len(latencies)


# One wrk connection per agent: alternate fetch_inbox / health_check, think an exponential time of mean
# 1/rate between calls (wrk's `delay` hook), count non-200 answers and JSON-RPC errors, print JSON.
WRK_SCRIPT = """
local mean_ms = tonumber(os.getenv("BENCH_THINK_MS"))
local project = os.getenv("BENCH_PROJECT")
local token = os.getenv("BENCH_TOKEN")
local threads = {}
local i = 0
errors = 0  -- a global: done() reads each thread's count with thread:get
function setup(thread) table.insert(threads, thread) end
function init(args) math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000) end
function delay() return math.floor(-math.log(1 - math.random()) * mean_ms) end
function request()
  i = i + 1
  local name, arguments = "health_check", "{}"
  if i % 2 == 1 then
    name = "fetch_inbox"
    arguments = '{"project_key":"' .. project .. '","agent_name":"HumanOperator","limit":5}'
  end
  local body = '{"jsonrpc":"2.0","id":' .. i .. ',"method":"tools/call","params":{"name":"' .. name ..
    '","arguments":' .. arguments .. ',"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",' ..
    '"io.modelcontextprotocol/clientCapabilities":{}}}}'
  return wrk.format("POST", "/mcp/", {["Content-Type"] = "application/json", ["Accept"] = "application/json",
    ["Authorization"] = "Bearer " .. token, ["MCP-Protocol-Version"] = "2026-07-28",
    ["Mcp-Method"] = "tools/call", ["Mcp-Name"] = name}, body)
end
function response(status, headers, body)
  if status ~= 200 or string.find(string.sub(body, 1, 200), '"error"', 1, true) then errors = errors + 1 end
end
function done(summary, latency, requests)
  local failed = 0
  for _, thread in ipairs(threads) do failed = failed + thread:get("errors") end
  local e = summary.errors
  io.write(string.format('BENCH {"calls":%d,"duration_s":%.3f,"errors":%d,"socket_errors":%d,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f}\\n',
    summary.requests, summary.duration / 1e6, failed, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000))
end
"""


def wrk_load(port: int, agents: int, rate: float, seconds: float, workdir: Path) -> dict[str, Any]:
    """The agents' load from one `wrk` process (C, epoll): a load generator that takes little of the
    machine's two cores from the daemon, unlike 200 Python threads."""
    script = workdir / "agents.lua"
    script.write_text(WRK_SCRIPT)
    env = {**os.environ, "BENCH_THINK_MS": str(1000.0 / rate), "BENCH_PROJECT": PROJECT, "BENCH_TOKEN": TOKEN}
    done = subprocess.run(["wrk", "-t1", f"-c{agents}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script),
                           f"http://127.0.0.1:{port}/mcp/"], env=env, capture_output=True, text=True, check=False,
                          timeout=seconds + 60)
    line = next((line for line in done.stdout.splitlines() if line.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(line[len("BENCH "):])
    return figures


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, 50 agents for 5 s")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--rate", type=float, default=5.0, help="calls per second per agent")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--processes", type=int, default=4, help="load processes (--load threads only)")
    parser.add_argument("--load", choices=("wrk", "threads"), default="wrk" if shutil.which("wrk") else "threads",
                        help="load generator: wrk (default when installed) or Python threads")
    parser.add_argument("--scale-only", action="store_true", help="skip the shim-overhead measurement")
    args = parser.parse_args()
    if args.quick:
        args.agents, args.seconds = 50, 5.0
    calls = 200 if args.quick else 1000
    paths = temp_mailbox("remote")
    try:
        port = start(paths)
        status = read_status(paths) or {}
        pid = int(status["pid"])
        with DaemonClient(paths) as conn:
            conn.call_tool("register_agent", {"project_key": PROJECT, "program": "bench", "model": "m",
                                              "name": "HumanOperator"})
        figures: dict[str, Any] = {}
        if not args.scale_only:
            direct(port, 50)  # warm both paths
            through_shim(port, 50)
            bridge_ms = summarise(direct(port, calls))
            shim_ms = summarise(through_shim(port, calls))
            overhead = round(shim_ms["p50_ms"] - bridge_ms["p50_ms"], 3)
            figures["shim_overhead"] = {"bridge_direct": bridge_ms, "through_remote_shim": shim_ms,
                                        "overhead_p50_ms": overhead, "target_ms": TARGET_OVERHEAD_MS,
                                        "met": overhead <= TARGET_OVERHEAD_MS}
        rss_before = rss_mib(pid)
        share = [args.agents // args.processes + (1 if n < args.agents % args.processes else 0)
                 for n in range(args.processes)]
        started, cpu_before, load_before = time.monotonic(), cpu_seconds(pid), os.getloadavg()[0]
        if args.load == "wrk":
            measured = wrk_load(port, args.agents, args.rate, args.seconds, paths.root)
            errors, total = measured["errors"] + measured["socket_errors"], measured["calls"]
            scale = {k: measured[k] for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")}
        else:
            with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
                results = pool.map(agent_load, [(port, n, args.rate, args.seconds, sum(share[:k]) * 1000)
                                                for k, n in enumerate(share)])
            latencies = [x for r in results for x in r[0]]
            errors = sum(r[1] for r in results)
            total = sum(r[2] for r in results)
            scale = summarise(latencies)
        elapsed = time.monotonic() - started
        daemon_cpu_s = cpu_seconds(pid) - cpu_before
        daemon_cpu = round(daemon_cpu_s / elapsed, 2)
        figures |= {
            "scale": {"agents": args.agents, "rate_per_agent": args.rate, "seconds": args.seconds,
                      "offered_calls_per_s": args.agents * args.rate, "calls": total,
                      "calls_per_s": round(total / elapsed, 1), "errors": errors, "latency": scale,
                      "load_generator": args.load, "daemon_cpu_cores": daemon_cpu,
                      "daemon_cpu_ms_per_call": round(daemon_cpu_s * 1000 / max(total, 1), 3),
                      "machine_load_before": round(load_before, 2),
                      "machine_load_after": round(os.getloadavg()[0], 2),
                      "daemon_rss_mib_before": rss_before, "daemon_rss_mib_after": rss_mib(pid),
                      "target_p99_ms": TARGET_P99_MS, "met": scale["p99_ms"] <= TARGET_P99_MS and errors == 0},
        }
        write_report("bench_remote" + ("_quick" if args.quick else ""), figures)
    finally:
        stop(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
