"""The whole-system benchmark: simulated agents, each a real `mailctl mcp` shim driven over stdio.

    python -m tests.bench [--agents 16] [--duration 60] [--messages N] [--prefill 1000000]
                          [--think-ms 0] [--backend asyncio|trio] [--plot] [--soak MINUTES] [--no-rebuild]

Each agent spawns the shim as an editor would (timing spawn -> `initialize`), registers, then runs
a weighted mix of the tools agents really call: sends with cc, threads and ack requests, inbox
polls, read marks, acks, searches, reserve/release, guard checks, whois and thread summaries (the
daemon's LLM is litellm's `mock_response`, so nothing leaves the machine). A sampler records
daemon RSS, open descriptors, WAL size, shim RSS and window latency every few seconds.

Writes `results/workload.json` and `results/workload.md` (and PNG charts with `--plot`). `--soak`
runs steady load for MINUTES and exits 1 if daemon RSS or descriptors keep growing after warm-up.
Does not: assert anything about speed (the report compares figures with the issues' targets).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from shared.client import DaemonClient, ensure_started
from shared.paths import MailboxPaths, read_status
from tests.bench.bench_search import QUERIES, TextMaker, build
from tests.bench.common import RESULTS, host_cpu_jiffies, machine, steal_share, stop, summarise, temp_mailbox
from tests.bench.soak import (
    archive_checks,
    archive_ratio,
    judge_soak,
    prefilled_up_to,
    rebuild_check,
    storage_sample,
)
from tests.bench.soak import plot as plot_soak

PROJECT = "bench"
LLM_REPLY = json.dumps({
    "overview": "Agents coordinate a release.", "participants": [], "key_points": ["release on Friday"],
    "action_items": ["run the migration"],
})
# (operation, weight): roughly what a busy coding agent does between edits.
MIX = [
    ("send_message", 26), ("fetch_inbox", 24), ("mark_message_read", 8), ("acknowledge_message", 5),
    ("search_mailbox", 10), ("reserve_release", 8), ("guard_check", 8), ("whois", 4), ("summarize_thread", 4),
    ("reply_message", 3),
]
SEARCH_TERMS = [str(args["query"]) for _, args in QUERIES] + ["deploy", "migration", "review", "auth token"]
# Targets from issues 3, 5, 6 and 9 (ms), checked against the solo phase: one agent calling through
# its shim while the others are connected but quiet (the targets are for an otherwise idle daemon).
TARGETS = {
    "send_message p50 (shim)": ("send_message", "p50_ms", 3.0),
    "send_message p99 (shim)": ("send_message", "p99_ms", 15.0),
    "fetch_inbox p50": ("fetch_inbox", "p50_ms", 3.0),
    "search_mailbox p50": ("search_mailbox", "p50_ms", 30.0),
}


class ToolFailed(RuntimeError):
    pass


@dataclass
class Recorder:
    """Latency samples per tool, plus a rolling window the sampler drains."""

    by_tool: dict[str, list[float]] = field(default_factory=dict)
    window: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    sends: int = 0

    def add(self, tool: str, seconds: float) -> None:
        self.by_tool.setdefault(tool, []).append(seconds)
        self.window.append(seconds)

    def fail(self, tool: str) -> None:
        self.errors[tool] = self.errors.get(tool, 0) + 1


class ShimAgent:
    """One simulated editor: a `mailctl mcp` subprocess spoken to in newline-delimited JSON-RPC."""

    def __init__(self, process: Process, recorder: Recorder) -> None:
        self.process = process
        self.recorder = recorder
        assert process.stdout is not None
        self._reader = BufferedByteReceiveStream(process.stdout)
        self._next_id = 0
        self.name = ""
        self.inbox: list[dict[str, Any]] = []
        self.threads: list[str] = []

    @classmethod
    async def spawn(cls, paths: MailboxPaths, recorder: Recorder, mode: str = "extended") -> tuple[ShimAgent, float]:
        started = time.perf_counter()
        process = await anyio.open_process(
            [sys.executable, "-P", "-m", "mailctl", "mcp", "--tools", mode],
            cwd=paths.root, env=dict(os.environ, AGENT_MAIL_ROOT=str(paths.root)), stderr=None,
        )
        agent = cls(process, recorder)
        await agent.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                           "clientInfo": {"name": "bench-workload", "version": "1"}})
        spawn_seconds = time.perf_counter() - started
        await agent.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return agent, spawn_seconds

    async def send(self, frame: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(json.dumps(frame, separators=(",", ":")).encode() + b"\n")

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        await self.send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        while True:  # skip server notifications (list changes, resource updates)
            reply = json.loads(await self._reader.receive_until(b"\n", 64 * 1024 * 1024))
            if reply.get("id") == self._next_id:
                break
        if "error" in reply:
            raise ToolFailed(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    async def call(self, tool: str, arguments: dict[str, Any], label: str | None = None) -> Any:
        started = time.perf_counter()
        result = await self.request("tools/call", {"name": tool, "arguments": arguments})
        elapsed = time.perf_counter() - started
        if result.get("isError"):
            self.recorder.fail(label or tool)
            raise ToolFailed(f"{tool}: {result.get('structuredContent') or result.get('content')}")
        self.recorder.add(label or tool, elapsed)
        return result.get("structuredContent")

    async def close(self) -> None:
        if self.process.stdin is not None:
            await self.process.stdin.aclose()
        with anyio.move_on_after(5):
            await self.process.wait()
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@dataclass
class Plan:
    agents: int
    duration: float
    messages: int | None
    think: float
    seed: int
    solo_rounds: int


async def solo(agent: ShimAgent, peer: str, rounds: int, seed: int) -> dict[str, Any]:
    """Sequential calls from one agent: the latency a single editor sees on an otherwise idle daemon."""
    recorder, agent.recorder = agent.recorder, Recorder()
    text, rng = TextMaker(seed=seed), random.Random(seed)
    for _ in range(rounds):
        await agent.call("send_message", {"project_key": PROJECT, "to": [peer], "subject": text.subject(),
                                          "body_md": text.body()})
        await agent.call("fetch_inbox", {"project_key": PROJECT, "limit": 20})
        await agent.call("search_mailbox", {"project_key": PROJECT, "query": rng.choice(SEARCH_TERMS), "limit": 10})
    figures = {tool: summarise(v) for tool, v in sorted(agent.recorder.by_tool.items())}
    agent.recorder = recorder
    return figures


async def act(agent: ShimAgent, op: str, peers: list[str], rng: random.Random, text: TextMaker, serial: int) -> str:
    """One step of an agent's loop: run operation `op` of MIX through the shim."""
    others = [p for p in peers if p != agent.name]
    if op == "send_message" or (op in ("reply_message", "summarize_thread") and not agent.threads):
        thread = rng.choice(agent.threads) if agent.threads and rng.random() < 0.5 else f"{agent.name}-{serial}"
        cc = rng.sample(others, 1) if len(others) > 1 and rng.random() < 0.3 else []
        await agent.call("send_message", {
            "project_key": PROJECT, "to": [rng.choice(others)], "cc": cc, "subject": text.subject(),
            "body_md": text.body(), "thread_id": thread, "ack_required": rng.random() < 0.2,
            "importance": rng.choice(["normal"] * 8 + ["high", "urgent"]),
        })
        agent.recorder.sends += 1
        if thread not in agent.threads:
            agent.threads = [*agent.threads[-19:], thread]
        return "send_message"
    if op == "fetch_inbox":
        inbox = await agent.call("fetch_inbox", {"project_key": PROJECT, "limit": 20})
        agent.inbox = inbox["result"]
        agent.threads = [*agent.threads, *(m["thread_id"] for m in agent.inbox if m.get("thread_id"))][-20:]
    elif op == "mark_message_read" and agent.inbox:
        message = agent.inbox.pop()
        await agent.call("mark_message_read", {"project_key": PROJECT, "message_id": message["id"]})
    elif op == "acknowledge_message" and agent.inbox:
        message = agent.inbox.pop()
        await agent.call("acknowledge_message", {"project_key": PROJECT, "message_id": message["id"]})
    elif op == "reply_message" and agent.inbox:
        message = agent.inbox.pop()
        await agent.call("reply_message", {"project_key": PROJECT, "message_id": message["id"],
                                           "body_md": text.body()})
        agent.recorder.sends += 1
    elif op == "search_mailbox":
        await agent.call("search_mailbox", {"project_key": PROJECT, "query": rng.choice(SEARCH_TERMS), "limit": 10})
    elif op == "reserve_release":
        paths = [f"src/{agent.name.lower()}/{serial % 7}/**", f"docs/{rng.randint(1, 50)}.md"]
        await agent.call("file_reservation_paths", {"project_key": PROJECT, "paths": paths, "ttl_seconds": 300,
                                                    "reason": "bench"})
        await agent.call("release_file_reservations", {"project_key": PROJECT, "paths": paths})
    elif op == "guard_check":
        staged = [f"src/{rng.choice(peers).lower()}/{rng.randint(0, 6)}/f{i}.py" for i in range(20)]
        await agent.call("guard_check", {"paths": staged, "agent_name": agent.name})
    elif op == "whois":
        await agent.call("whois", {"project_key": PROJECT, "agent_name": rng.choice(peers),
                                   "include_recent_commits": False})
    elif op == "summarize_thread":
        await agent.call("summarize_thread", {"project_key": PROJECT, "thread_id": rng.choice(agent.threads),
                                              "llm_mode": True})
    else:
        return "skipped"
    return op


async def run_agent(agent: ShimAgent, peers: list[str], plan: Plan, deadline: float, index: int) -> None:
    rng = random.Random(plan.seed + index)
    text = TextMaker(seed=plan.seed + index)
    operations, weights = [name for name, _ in MIX], [w for _, w in MIX]
    serial = 0
    # A first tour runs every operation once, whatever the deadline, so even a short run covers all.
    while serial < len(MIX) or time.monotonic() < deadline:
        if plan.messages is not None and agent.recorder.sends >= plan.messages:
            return
        op = operations[serial] if serial < len(MIX) else rng.choices(operations, weights=weights)[0]
        serial += 1
        try:
            await act(agent, op, peers, rng, text, serial)
        except ToolFailed as exc:  # counted per tool in the report; the load goes on
            print(f"  {agent.name}: {exc}"[:300], file=sys.stderr)
        if plan.think:
            await anyio.sleep(rng.uniform(0.5, 1.5) * plan.think)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def open_fds(pid: int) -> int | None:
    try:
        return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(the process's own CPU, its children's: those it reaped plus those alive now), in seconds:
    the daemon's own work against git's (fast-import, repacks)."""
    tick = os.sysconf("SC_CLK_TCK")

    def fields(path: Path) -> list[str]:
        return path.read_text().rsplit(")", 1)[1].split()  # after the command name (it may hold spaces)

    try:
        own = fields(Path(f"/proc/{pid}/stat"))
    except OSError:
        return 0.0, 0.0
    children = (int(own[13]) + int(own[14])) / tick
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            live = fields(stat)
            if int(live[1]) == pid:  # ppid
                children += (int(live[11]) + int(live[12]) + int(live[13]) + int(live[14])) / tick
    return (int(own[11]) + int(own[12])) / tick, children


def file_mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 2) if path.exists() else 0.0


def tree_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6, 2) if path.exists() else 0.0


async def sample_forever(paths: MailboxPaths, daemon_pid: int, agents: list[ShimAgent], recorder: Recorder,
                         every: float, samples: list[dict[str, Any]]) -> None:
    started = time.monotonic()
    health = DaemonClient(paths)  # its own connection: the agents' shims stay untouched
    try:
        while True:
            await anyio.sleep(every)
            await sample_once(paths, daemon_pid, agents, recorder, every, samples, started, health)
    finally:
        health.close()


async def sample_once(paths: MailboxPaths, daemon_pid: int, agents: list[ShimAgent], recorder: Recorder,
                      every: float, samples: list[dict[str, Any]], started: float, health: DaemonClient) -> None:
    window, recorder.window = recorder.window, []
    shim_rss = [r for a in agents if (r := rss_mb(a.process.pid)) is not None]
    storage = await anyio.to_thread.run_sync(storage_sample, paths, health)
    samples.append({
        "t": round(time.monotonic() - started, 2),
        "daemon_rss_mb": rss_mb(daemon_pid),
        "daemon_fds": open_fds(daemon_pid),
        "shim_rss_mb_max": round(max(shim_rss), 2) if shim_rss else None,
        "ops": len(window),
        "sends": recorder.sends,
        "ops_per_s": round(len(window) / every, 1),
        "p50_ms": round(statistics.median(window) * 1000, 3) if window else None,
        **storage,
    })


async def after_load(paths: MailboxPaths, spawns: int = 10) -> dict[str, Any]:
    """On the warm, now idle daemon: spawn -> initialize of one shim at a time (the editor case the
    100 ms target is about), and the `tools/list` token cost in both modes."""
    alone: list[float] = []
    cost: dict[str, Any] = {}
    for i in range(spawns):
        mode = "extended" if i % 2 else "core"
        agent, seconds = await ShimAgent.spawn(paths, Recorder(), mode)
        alone.append(seconds)
        if mode not in cost:
            tools = (await agent.request("tools/list", {}))["tools"]
            size = len(json.dumps({"tools": tools}, separators=(",", ":")))
            cost[mode] = {"tools": len(tools), "bytes": size, "tokens_estimate": size // 4}
        await agent.close()
    return {"tools_list": cost, "spawn_alone": summarise(alone)}


async def wait_archive_drained(agent: ShimAgent, limit: float = 60.0) -> dict[str, Any]:
    started = time.monotonic()
    health = await agent.call("health_check", {}, label="health_check")
    with anyio.move_on_after(limit):
        while health["archive"]["queue_depth"]:
            await anyio.sleep(0.1)
            health = await agent.call("health_check", {}, label="health_check")
    health["archive"]["drain_after_load_seconds"] = round(time.monotonic() - started, 2)
    return health


async def workload(paths: MailboxPaths, plan: Plan, sample_every: float) -> dict[str, Any]:
    recorder = Recorder()
    status = read_status(paths)
    assert status is not None, "the daemon did not write its status file"
    daemon_pid = int(status["pid"])
    daemon_rss_start = rss_mb(daemon_pid)
    spawn_times: list[float] = []
    agents: list[ShimAgent] = []
    names: list[str] = []

    async def join(i: int) -> None:
        agent, seconds = await ShimAgent.spawn(paths, recorder)
        spawn_times.append(seconds)
        registered = await agent.call("register_agent", {"project_key": PROJECT, "program": "bench",
                                                         "model": "none", "task_description": f"agent {i}"})
        agent.name = registered["name"]
        agents.append(agent)
        names.append(agent.name)

    async with anyio.create_task_group() as tg:  # all editors open at once, as after a reboot
        for i in range(plan.agents):
            tg.start_soon(join, i)
    shim_rss_idle = [r for a in agents if (r := rss_mb(a.process.pid)) is not None]
    solo_figures = await solo(agents[0], names[-1], plan.solo_rounds, plan.seed)

    samples: list[dict[str, Any]] = []
    cpu_start, host_start = cpu_seconds(daemon_pid), host_cpu_jiffies()
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sample_forever, paths, daemon_pid, agents, recorder, sample_every, samples)
        async with anyio.create_task_group() as load:
            for i, agent in enumerate(agents):
                load.start_soon(run_agent, agent, names, plan, started + plan.duration, i)
        elapsed = time.monotonic() - started
        tg.cancel_scope.cancel()
    cpu_end, host_end = cpu_seconds(daemon_pid), host_cpu_jiffies()
    health = await wait_archive_drained(agents[0])
    shim_rss_end = [r for a in agents if (r := rss_mb(a.process.pid)) is not None]
    daemon_rss_end = rss_mb(daemon_pid)
    for agent in agents:
        await agent.close()
    ops = sum(len(v) for v in recorder.by_tool.values())
    rss_series = [s["daemon_rss_mb"] for s in samples if s["daemon_rss_mb"] is not None]
    return {
        "solo": solo_figures,
        "tools": {tool: summarise(v) for tool, v in sorted(recorder.by_tool.items()) if tool != "health_check"},
        "errors": recorder.errors,
        "throughput": {"seconds": round(elapsed, 2), "operations": ops, "ops_per_s": round(ops / elapsed, 1),
                       "sends": recorder.sends, "sends_per_s": round(recorder.sends / elapsed, 1)},
        "shim": {"spawn_to_initialize": summarise(spawn_times),
                 "rss_mb_idle_max": round(max(shim_rss_idle), 2) if shim_rss_idle else None,
                 "rss_mb_end_max": round(max(shim_rss_end), 2) if shim_rss_end else None},
        "daemon": {"pid": daemon_pid, "rss_mb_start": daemon_rss_start, "rss_mb_end": daemon_rss_end,
                   "rss_mb_max": max(rss_series) if rss_series else None, "fds_end": open_fds(daemon_pid),
                   "cpu_ms_per_send": round((cpu_end[0] - cpu_start[0]) * 1000 / max(recorder.sends, 1), 3),
                   "git_cpu_ms_per_send": round((cpu_end[1] - cpu_start[1]) * 1000 / max(recorder.sends, 1), 3),
                   "cpu_cores": round((cpu_end[0] - cpu_start[0]) / elapsed, 3),
                   "git_cpu_cores": round((cpu_end[1] - cpu_start[1]) / elapsed, 3)},
        "host": {"steal_share": steal_share(host_start, host_end)},
        "archive": {"queue_depth_end": health["archive"]["queue_depth"],
                    "messages_archived": health["archive"].get("messages_archived"),
                    "packs_end": health["archive"].get("packs"),
                    "repacks": health["archive"].get("repacks"),
                    "lag_p99_seconds": health["archive"].get("lag_p99_seconds"),
                    "commits": health["archive"].get("commits"),
                    "drain_after_load_seconds": health["archive"]["drain_after_load_seconds"]},
        "llm": health.get("llm"),
        "samples": samples,
    }


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.1f} %"


def markdown(report: dict[str, Any]) -> str:
    p = report["params"]
    lines = [
        f"Solo (one agent, {p['solo_rounds']} rounds, others connected): "
        + ", ".join(f"`{tool}` p50 {f['p50_ms']} / p99 {f['p99_ms']} ms" for tool, f in report["solo"].items()),
        "",
        f"Workload: {p['agents']} agents through real `mailctl mcp` shims, {report['throughput']['seconds']} s, "
        f"{p['prefill']:,} prefilled messages, daemon on {p['backend']}; {report['machine']['cpus']} CPUs, "
        f"Python {report['machine']['python']}, every agent calling back to back"
        + (f" with ~{p['think_ms']} ms pauses." if p["think_ms"] else "."),
        "",
        "| tool | n | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| `{tool}` | {s['n']} | {s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} | {s['max_ms']} |"
              for tool, s in report["tools"].items()]
    t, shim, d, a, s = (report[k] for k in ("throughput", "shim", "daemon", "archive", "storage"))
    lines += [
        "",
        "| figure | value |",
        "|---|---|",
        f"| throughput | {t['ops_per_s']} ops/s, {t['sends_per_s']} sends/s ({t['operations']} ops) |",
        f"| shim spawn → initialize | alone p50 {shim['spawn_to_initialize_alone']['p50_ms']} ms; "
        f"{p['agents']} at once p50 {shim['spawn_to_initialize']['p50_ms']} ms, "
        f"p95 {shim['spawn_to_initialize']['p95_ms']} ms |",
        f"| shim RSS (max) | {shim['rss_mb_end_max']} MB |",
        f"| daemon RSS start / max / end | {d['rss_mb_start']} / {d['rss_mb_max']} / {d['rss_mb_end']} MB |",
        f"| daemon CPU during the load (itself / its git children) | {d.get('cpu_cores')} / "
        f"{d.get('git_cpu_cores')} cores; {d.get('cpu_ms_per_send')} / {d.get('git_cpu_ms_per_send')} ms a send |",
        f"| host steal during the load (CPU the hypervisor gave away: compare runs with little) | "
        f"{_percent(report['host']['steal_share'])} |",
        f"| archive lag p99 / drain after load | {a['lag_p99_seconds']} s / {a['drain_after_load_seconds']} s |",
        f"| DB / WAL / archive | {s['db_mb']} / {s['wal_mb']} / {s['archive_mb']} MB |",
        f"| `tools/list` tokens core / extended | {report['tools_list']['core']['tokens_estimate']} / "
        f"{report['tools_list']['extended']['tokens_estimate']} |",
    ]
    lines += [f"| target: {name} ≤ {limit} | {'met' if ok else 'MISSED'} ({value}) |"
              for name, (value, limit, ok) in report["targets"].items()]
    if "soak" in report:
        soak = report["soak"]
        lines.append(f"| soak: RSS growth / FD growth | {soak['daemon_rss_mb']['growth_pct']} % / "
                     f"{soak['daemon_fds']['growth_pct']} % → "
                     f"{'flat' if soak['daemon_rss_mb']['bounded'] and soak['daemon_fds']['bounded'] else 'GROWING'} |")
        lines.append(f"| soak: archive / DB bytes per message growth | "
                     f"{soak['archive_bytes_per_message']['growth_pct']} % / "
                     f"{soak['db_bytes_per_message']['growth_pct']} %; packs max {soak['packs']['max']}; "
                     f"failed: {', '.join(soak['failed']) or 'nothing'} |")
    if report.get("archive_checks"):
        c = report["archive_checks"]
        if "rebuild" in report:
            r = report["rebuild"]
            lines.append(f"| `doctor --rebuild` of the soak's mailbox | {'identical' if r['ok'] else 'DIFFERS'}: "
                         f"{r.get('compared')} compared, {r.get('differing') or r.get('error')}, {r['seconds']} s |")
        lines.append(f"| archive: KB per message / git log -1 / fsck / packs | "
                     f"{s.get('archive_kb_per_message')} KB / {c['git_log_1_ms']} ms / "
                     f"{'clean' if c['fsck_ok'] else 'ERRORS'} / {c['packs']} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(9, 4.5))
    tools = list(report["tools"])
    ax.bar(tools, [report["tools"][t]["p50_ms"] for t in tools], label="p50")
    ax.scatter(tools, [report["tools"][t]["p99_ms"] for t in tools], color="red", zorder=3, label="p99")
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    ax.set_title("Latency per tool through the shim")
    ax.legend()
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    written.append(out / "workload-latency.png")
    fig.savefig(written[-1])
    samples = report["samples"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    t = [s["t"] for s in samples]
    top.plot(t, [s["daemon_rss_mb"] for s in samples], label="daemon RSS (MB)")
    top.plot(t, [s["daemon_fds"] for s in samples], label="daemon open fds")
    top.legend()
    bottom.plot(t, [s["p50_ms"] for s in samples], label="window p50 (ms)")
    bottom.plot(t, [s["wal_mb"] for s in samples], label="WAL (MB)")
    bottom.set_xlabel("seconds")
    bottom.legend()
    fig.tight_layout()
    written.append(out / "workload-over-time.png")
    fig.savefig(written[-1])
    plt.close("all")
    return written


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=16, help="simulated agents, 1-64 (default 16)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--messages", type=int, help="stop each agent after this many sends")
    parser.add_argument("--prefill", type=int, default=0, help="messages written into the DB first (up to 1M)")
    parser.add_argument("--solo-rounds", type=int, default=300, help="sequential send/inbox/search rounds first")
    parser.add_argument("--think-ms", type=float, default=0.0, help="mean pause between an agent's calls")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"], help="daemon and driver")
    parser.add_argument("--sample-every", type=float, default=2.0, help="sampler interval in seconds")
    parser.add_argument("--soak", type=float, metavar="MINUTES", help="steady load for MINUTES; judge growth")
    parser.add_argument("--plot", action="store_true", help="draw PNG charts next to the report (matplotlib)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="report folder (default tests/bench/results)")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--no-rebuild", action="store_true",
                        help="skip the soak's closing rebuild of the mailbox from its archive (minutes)")
    args = parser.parse_args(argv)
    if not 1 <= args.agents <= 64:
        parser.error("--agents must be between 1 and 64")
    if not 0 <= args.prefill <= 1_000_000:
        parser.error("--prefill must be between 0 and 1,000,000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    duration = args.soak * 60 if args.soak else args.duration
    plan = Plan(args.agents, duration, args.messages, args.think_ms / 1000, args.seed, args.solo_rounds)
    paths = temp_mailbox("workload")
    paths.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    prefill: dict[str, Any] = {}
    if args.prefill:
        print(f"prefilling {args.prefill:,} messages", flush=True)
        prefill = build(paths.db, args.prefill)
        prefill["last_message_id"] = prefilled_up_to(paths.db)
    os.environ.update({
        "AGENT_MAIL_BACKEND": args.backend, "AGENT_MAIL_IDLE_TIMEOUT": "600", "LLM_ENABLED": "true",
        "LLM_DEFAULT_MODEL": "gpt-4o-mini", "LLM_MOCK_RESPONSE": LLM_REPLY,
    })
    try:
        ensure_started(paths)
        print(f"running {args.agents} agents for {duration:.0f} s ({paths.root})", flush=True)
        figures = anyio.run(workload, paths, plan, args.sample_every, backend=args.backend)
        late = anyio.run(after_load, paths, backend=args.backend)
        figures["tools_list"] = late["tools_list"]
        figures["shim"]["spawn_to_initialize_alone"] = late["spawn_alone"]
    finally:
        stop(paths)
    report: dict[str, Any] = {
        "bench": "workload",
        "machine": machine(),
        "params": {"agents": args.agents, "duration_s": duration, "messages_per_agent": args.messages,
                   "prefill": args.prefill, "think_ms": args.think_ms, "backend": args.backend,
                   "soak_minutes": args.soak, "solo_rounds": args.solo_rounds},
        "prefill_build": prefill,
        **figures,
        "storage": {"db_mb": file_mb(paths.db), "wal_mb": file_mb(paths.db.with_name(paths.db.name + "-wal")),
                    "archive_mb": tree_mb(paths.archive)},
    }
    report["targets"] = {
        name: (report["solo"][tool][key], limit, report["solo"][tool][key] <= limit)
        for name, (tool, key, limit) in TARGETS.items() if tool in report["solo"]
    }
    spawn_p50 = report["shim"]["spawn_to_initialize_alone"]["p50_ms"]
    report["targets"]["shim spawn → initialize p50 (one at a time, warm daemon)"] = (spawn_p50, 100.0,
                                                                                   spawn_p50 <= 100)
    shim_rss = report["shim"]["rss_mb_end_max"]
    report["targets"]["shim RSS (MB)"] = (shim_rss, 25.0, shim_rss is not None and shim_rss <= 25)
    report["archive_checks"] = archive_checks(paths.archive) if (paths.archive / "HEAD").exists() else None
    report["storage"]["archive_kb_per_message"] = (
        round(report["storage"]["archive_mb"] * 1e3 / report["archive"]["messages_archived"], 2)
        if report["archive"].get("messages_archived") else None)
    if args.soak:
        report["soak"] = judge_soak(report["samples"], args.prefill)
        if report["archive_checks"] is not None:  # issue 22's size, lag and rebuild targets
            ratio = archive_ratio(report["samples"])
            report["soak"]["archive_vs_db"] = ratio
            kb = report["storage"]["archive_kb_per_message"]
            report["targets"]["archive ÷ database, max over the run (or ≤ 2 KB a message)"] = (
                ratio["max"], 2.0, (ratio["max"] or 0) <= 2.0 or (kb is not None and kb <= 2.0))
            lag = report["archive"]["lag_p99_seconds"]
            report["targets"]["archive lag p99 (s)"] = (lag, 1.0, lag is not None and lag <= 1.0)
            if not args.no_rebuild:
                print("rebuilding a copy of the mailbox from its archive", flush=True)
                report["rebuild"] = rebuild_check(paths, prefill.get("last_message_id", 0))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "workload.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.out / "workload.md").write_text(table)
    print(table)
    if args.plot:
        for png in plot(report, args.out):
            print(f"wrote {png}")
        archive_on = os.environ.get("AGENT_MAIL_ARCHIVE_ENABLED") != "false"
        title = (f"soak: {args.agents} agents, think {args.think_ms:g} ms, {duration / 60:g} min, "
                 f"prefill {args.prefill:,}, archive {'on' if archive_on else 'off'}")
        print(f"wrote {plot_soak(report['samples'], args.out / 'workload-storage.png', title)}")
    print(f"wrote {args.out / 'workload.json'} and {args.out / 'workload.md'}")
    failed = sum(report["errors"].values())
    if args.soak and not report["soak"]["passed"]:
        print(f"SOAK FAILED: kept growing after warm-up: {', '.join(report['soak']['failed'])}", file=sys.stderr)
        return 1
    if failed:
        print(f"{failed} tool calls failed (see errors in the report)", file=sys.stderr)
        return 1
    return 0
