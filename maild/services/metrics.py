"""Tool-call metrics (calls, errors, latency per tool) and the ring of recent calls.

Owns the in-memory counters every tool call updates (a few µs: no I/O, no lock, no await), their
persistence (loaded at start, flushed by a background task and at shutdown, never a write per call,
so a restart keeps the history) and a bounded ring of who called what. The ring holds the time, the
tool, the `project_key` and the caller's agent, nothing else: never bodies, tokens or other arguments.
Recording happens in one place, `ToolRegistry.call`, which every dispatch path goes through.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import anyio

from maild.services.sessions import current_session
from maild.store import Connection, Store, format_ts
from shared.errors import MailError
from shared.slugs import slugify

log = logging.getLogger(__name__)

RING_SIZE = 4096  # upstream's ring size
MAX_NAME_CHARS = 128  # project keys and agent names in the ring are truncated to this
_SUB_BITS = 3  # 8 histogram buckets per power of two: a percentile is within ~6 % of the truth
_SUB = 1 << _SUB_BITS


def bucket_of(micros: int) -> int:
    """The histogram bucket of a latency in µs: exact below 16 µs, then 8 log-spaced buckets per octave."""
    if micros < 2 * _SUB:
        return max(micros, 0)
    shift = micros.bit_length() - _SUB_BITS - 1
    return (shift + 1) * _SUB + ((micros >> shift) - _SUB)


def bucket_value(index: int) -> float:
    """A latency (µs) representing bucket `index`: its middle."""
    if index < 2 * _SUB:
        return float(index)
    shift = index // _SUB - 1
    low = (_SUB + index % _SUB) << shift
    return low + ((1 << shift) - 1) / 2


def percentile_ms(buckets: Mapping[int, int], total: int, fraction: float, max_us: int) -> float:
    """The `fraction` quantile (0.5: p50) of a histogram, in ms (0.0 for no calls), never above the
    largest latency seen (a bucket's middle may be)."""
    if total <= 0 or not buckets:
        return 0.0
    rank = max(1, round(fraction * total))
    seen = 0
    found = max(buckets)
    for index in sorted(buckets):
        seen += buckets[index]
        if seen >= rank:
            found = index
            break
    return round(min(bucket_value(found), float(max_us)) / 1000, 3)


@dataclass(slots=True)
class ToolStats:
    calls: int = 0
    errors: int = 0
    total_us: int = 0
    max_us: int = 0
    buckets: dict[int, int] = field(default_factory=dict)
    first: float = 0.0  # wall-clock seconds
    last: float = 0.0

    def describe(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "calls": self.calls,
            "errors": self.errors,
            "p50_ms": percentile_ms(self.buckets, self.calls, 0.50, self.max_us),
            "p95_ms": percentile_ms(self.buckets, self.calls, 0.95, self.max_us),
            "mean_ms": round(self.total_us / self.calls / 1000, 3) if self.calls else 0.0,
            "max_ms": round(self.max_us / 1000, 3),
            "first_call_ts": _stamp(self.first),
            "last_call_ts": _stamp(self.last),
        }


class RecentCall(NamedTuple):
    """One ring entry. The ring holds plain tuples of these fields (cheapest to build per call)."""

    at: float
    tool: str
    ok: bool
    project_key: str | None
    agent_id: int | None  # the session's bound agent (resolved to a name when read)
    agent_name: str | None  # else the agent_name / sender_name the call named


def _stamp(seconds: float) -> str | None:
    if not seconds:
        return None
    return format_ts(dt.datetime.fromtimestamp(seconds, dt.UTC))


def _short(value: object) -> str | None:
    return value[:MAX_NAME_CHARS] if isinstance(value, str) and value else None


class ToolMetrics:
    """One per daemon. `enabled=False` (AGENT_MAIL_TOOL_METRICS=false) records nothing: the bench's baseline."""

    def __init__(self, store: Store, *, enabled: bool = True, flush_seconds: float = 30.0,
                 ring_size: int = RING_SIZE) -> None:
        self._store = store
        self.enabled = enabled
        self._flush_seconds = flush_seconds
        self._stats: dict[str, ToolStats] = {}
        self._dirty: set[str] = set()
        self._writing: set[str] = set()  # tools whose rows a flush is writing now (not yet kept)
        self._ring: deque[tuple[float, str, bool, str | None, int | None, str | None]] = deque(maxlen=ring_size)
        self.flushes = 0
        self._persist = True

    # --- the hot path -------------------------------------------------------------------------

    def record(self, tool: str, elapsed_ns: int, ok: bool, arguments: Mapping[str, Any]) -> None:
        """Count one finished call. Called by ToolRegistry.call for every tool call on every path."""
        now = time.time()
        micros = elapsed_ns // 1000
        stats = self._stats.get(tool)
        if stats is None:
            stats = self._stats[tool] = ToolStats(first=now)
        stats.calls += 1
        if not ok:
            stats.errors += 1
        stats.total_us += micros
        if micros > stats.max_us:  # noqa: PLR1730 - max() is a call more per tool call
            stats.max_us = micros
        index = bucket_of(micros)
        stats.buckets[index] = stats.buckets.get(index, 0) + 1
        stats.last = now
        self._dirty.add(tool)
        session = current_session.get()
        agent_id = session.agent_id if session is not None else None
        name = None if agent_id is not None else _short(arguments.get("agent_name") or arguments.get("sender_name"))
        project = _short(arguments.get("project_key") or arguments.get("human_key"))
        self._ring.append((now, tool, ok, project, agent_id, name))

    # --- reading ------------------------------------------------------------------------------

    def tools(self) -> list[dict[str, Any]]:
        """Per-tool figures, busiest first."""
        rows = [stats.describe(name) for name, stats in self._stats.items()]
        return sorted(rows, key=lambda row: (-row["calls"], row["name"]))

    def summary(self) -> dict[str, Any]:
        """Totals over every tool (what health_check and `mailctl stats` show first)."""
        merged: dict[int, int] = {}
        calls = errors = 0
        for stats in self._stats.values():
            calls += stats.calls
            errors += stats.errors
            for index, count in stats.buckets.items():
                merged[index] = merged.get(index, 0) + count
        first = min((s.first for s in self._stats.values() if s.first), default=0.0)
        slowest = max((s.max_us for s in self._stats.values()), default=0)
        return {"calls": calls, "errors": errors, "tools": len(self._stats),
                "p50_ms": percentile_ms(merged, calls, 0.50, slowest),
                "p95_ms": percentile_ms(merged, calls, 0.95, slowest),
                "since": _stamp(first), "recording": self.enabled}

    def recent(self, window_seconds: float) -> list[RecentCall]:
        """Calls of the last `window_seconds`, newest first."""
        cutoff = time.time() - window_seconds
        out = []
        for entry in reversed(self._ring):
            if entry[0] < cutoff:
                break
            out.append(RecentCall(*entry))
        return out

    def statistics(self) -> dict[str, Any]:
        return {"ring": len(self._ring), "capacity": self._ring.maxlen, "flushes": self.flushes,
                "unflushed_tools": len(self._dirty | self._writing), "flush_seconds": self._flush_seconds}

    async def describe_recent(
        self, window_seconds: float, agent: str | None, project: str | None
    ) -> list[dict[str, Any]]:
        """The ring's entries in the window as dicts, agents resolved to names, filtered by agent and
        project (a slug or any key that slugifies to it; an agent's own project counts too)."""
        calls = self.recent(window_seconds)
        ids = sorted({c.agent_id for c in calls if c.agent_id is not None})

        def names(conn: Connection) -> dict[int, tuple[str, str]]:
            found: dict[int, tuple[str, str]] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(
                    f"SELECT a.id, a.name, p.slug FROM agents a JOIN projects p ON p.id = a.project_id"
                    f" WHERE a.id IN ({marks})", chunk,
                ):
                    found[row[0]] = (row[1], row[2])
            return found

        known = await self._store.read(names) if ids else {}
        want_agent = agent.lower() if agent else None
        want_project = slugify(project) if project else None
        out = []
        for call in calls:
            name, agent_project = known.get(call.agent_id, (call.agent_name, None)) if call.agent_id is not None \
                else (call.agent_name, None)
            slug = slugify(call.project_key) if call.project_key else agent_project
            if want_agent is not None and (name or "").lower() != want_agent:
                continue
            if want_project is not None and want_project not in (slug, agent_project):
                continue
            out.append({"timestamp": _stamp(call.at), "tool": call.tool, "ok": call.ok,
                        "project": slug, "agent": name})
        return out

    # --- persistence --------------------------------------------------------------------------

    async def load(self) -> None:
        """Add the history the last daemon flushed. Called before the daemon serves (a read right
        after a restart sees the history). Never fails the start: without it, counting starts at
        zero and nothing is saved (a shorter history must not overwrite the kept one)."""

        def rows(conn: Connection) -> list[Any]:
            return list(conn.execute(
                "SELECT tool, calls, errors, total_us, max_us, buckets, first_ts, last_ts FROM tool_metrics"))

        try:
            kept = await self._store.read(rows)
        except MailError as exc:
            log.warning("reading the kept tool metrics failed (%s); counting from zero, not saving", exc.message)
            self._persist = False
            return
        for tool, calls, errors, total_us, max_us, buckets, first_ts, last_ts in kept:
            try:
                histogram = {int(k): int(v) for k, v in json.loads(buckets).items()}
            except (ValueError, TypeError, AttributeError):
                log.warning("tool_metrics row for %s has an unreadable histogram; its latencies restart", tool)
                histogram = {}
            stats = self._stats.setdefault(tool, ToolStats(first=_seconds(first_ts)))
            stats.calls += calls
            stats.errors += errors
            stats.total_us += total_us
            stats.max_us = max(stats.max_us, max_us)
            for index, count in histogram.items():
                stats.buckets[index] = stats.buckets.get(index, 0) + count
            stats.first = min(filter(None, (stats.first, _seconds(first_ts))), default=0.0)
            stats.last = max(stats.last, _seconds(last_ts))

    async def flush(self) -> int:
        """Write the tools that changed since the last flush (one transaction); returns how many."""
        if not self._dirty or not self._persist:
            return 0
        dirty, self._dirty = self._dirty, set()
        self._writing = dirty
        rows = [(name, s.calls, s.errors, s.total_us, s.max_us,
                 json.dumps({str(k): v for k, v in sorted(s.buckets.items())}, separators=(",", ":")),
                 _stamp(s.first), _stamp(s.last))
                for name in sorted(dirty) if (s := self._stats.get(name)) is not None]

        def unit(conn: Connection) -> None:
            conn.executemany(
                "INSERT INTO tool_metrics(tool, calls, errors, total_us, max_us, buckets, first_ts, last_ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(tool) DO UPDATE SET calls = excluded.calls,"
                " errors = excluded.errors, total_us = excluded.total_us, max_us = excluded.max_us,"
                " buckets = excluded.buckets, last_ts = excluded.last_ts", rows)

        try:
            await self._store.write(unit)
        except BaseException:
            self._dirty |= dirty  # written next time (or lost with the process, never half-written)
            raise
        finally:
            self._writing = set()
        self.flushes += 1
        return len(rows)

    async def run(self) -> None:
        """The daemon's metrics task: flush every `flush_seconds`, and once more when cancelled at
        shutdown (the store closes only after the task group has ended)."""
        try:
            while True:
                await anyio.sleep(self._flush_seconds)
                await self._flush_logged()
        finally:
            with anyio.CancelScope(shield=True):
                await self._flush_logged()

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except MailError as exc:
            log.warning("flushing tool metrics failed (%s); retrying later", exc.message)


def _seconds(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

