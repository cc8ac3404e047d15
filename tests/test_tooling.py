"""Tooling resources (issue 17): tool metrics kept across restarts, the recent-calls ring, lock files,
capabilities, and the redacted config/environment view.

One HTTP-enabled daemon serves the module's shape and secrecy tests (its environment carries real
secret values, which must never come back out); the restart test gets its own daemon per backend.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from maild.services.metrics import ToolMetrics, bucket_of, bucket_value
from maild.store import open_store
from shared.config import Settings
from shared.errors import InvalidArgument, NotFound
from shared.paths import pid_alive
from tests.conftest import Mailbox, git_init
from tests.test_http import Bridge, free_port, wait_for_bridge

PROJECT = "/work/tooling"
SECRETS = {
    "HTTP_BEARER_TOKEN": f"bearer-{secrets.token_hex(12)}",
    "HTTP_JWT_SECRET": f"jwtsecret-{secrets.token_hex(12)}",
    "OPENAI_API_KEY": f"sk-{secrets.token_hex(16)}",
}
URL_SECRETS = {"redis": f"redispw{secrets.token_hex(8)}", "jwks": f"jwkspw{secrets.token_hex(8)}",
               "query": f"qtok{secrets.token_hex(8)}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mailbox, Bridge]]:
    """A daemon (asyncio) with its HTTP bridge on, started with secrets in its environment."""
    box = Mailbox(git_init(tmp_path_factory.mktemp("tooling") / "repo"), "asyncio")
    port = free_port()
    env = {**SECRETS, "AGENT_MAIL_HTTP": "true", "HTTP_PORT": str(port),
           "HTTP_RATE_LIMIT_REDIS_URL": f"redis://:{URL_SECRETS['redis']}@127.0.0.1:1/0",
           "HTTP_JWT_JWKS_URL": f"https://keys:{URL_SECRETS['jwks']}@example.invalid/jwks?token={URL_SECRETS['query']}"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        box.call("health_check")  # auto-starts the daemon with this environment
    try:
        wait_for_bridge(port)
        yield box, Bridge(box, port)
    finally:
        box.stop()


def read(box: Mailbox, uri: str) -> Any:
    with box.client() as conn:
        return conn.read_resource(uri)


def registered(box: Mailbox, name: str) -> tuple[Any, str]:
    """A client bound to a new agent `name`, and that agent's registration token."""
    conn = box.client()
    result = conn.call_tool("register_agent", {"project_key": PROJECT, "program": "test", "model": "m",
                                               "name": name})
    return conn, result["registration_token"]


def test_metrics_count_calls_and_errors_per_tool_on_every_path(served: tuple[Mailbox, Bridge]) -> None:
    box, bridge = served
    before = {row["name"]: row for row in read(box, "resource://tooling/metrics")["tools"]}
    with box.client() as conn:  # the lean path
        conn.call_tool("ensure_project", {"human_key": PROJECT})
        with pytest.raises(NotFound):
            conn.call_tool("whois", {"project_key": PROJECT, "agent_name": "NoSuchAgent"})
    with box.client(hello={"session": "sdk-path", "client": "test", "fast_path": False}) as conn:  # the SDK path
        conn.call_tool("ensure_project", {"human_key": PROJECT})
    status, _, _ = bridge.post("tools/call", {"name": "ensure_project", "arguments": {"human_key": PROJECT}},
                               token=SECRETS["HTTP_BEARER_TOKEN"])
    assert status == 200
    metrics = read(box, "resource://tooling/metrics")
    after = {row["name"]: row for row in metrics["tools"]}
    ensure, whois = after["ensure_project"], after["whois"]
    assert ensure["calls"] - before.get("ensure_project", {"calls": 0})["calls"] == 3
    assert whois["errors"] - before.get("whois", {"errors": 0})["errors"] == 1
    assert ensure["cluster"] == "infrastructure"
    assert 0 < ensure["p50_ms"] <= ensure["p95_ms"] <= ensure["max_ms"]
    assert set(ensure) >= {"name", "calls", "errors", "p50_ms", "p95_ms", "mean_ms", "max_ms", "last_call_ts"}
    assert metrics["totals"]["calls"] == sum(row["calls"] for row in metrics["tools"])
    assert metrics["recording"]["capacity"] == 4096


def test_health_check_and_mailctl_stats_summarise_the_metrics(served: tuple[Mailbox, Bridge]) -> None:
    box, _ = served
    summary = box.call("health_check")["tools"]
    assert summary["calls"] >= 1
    assert summary["recording"] is True
    assert set(summary) == {"calls", "errors", "tools", "p50_ms", "p95_ms", "since", "recording"}
    as_json = json.loads(box.mailctl("stats", "--json").stdout)
    assert {row["name"] for row in as_json["tools"]} >= {"health_check"}
    plain = box.mailctl("stats").stdout.splitlines()
    assert plain[0].startswith("tool calls since ")
    health = next(line for line in plain if line.startswith("health_check"))
    assert health.split()[1] == "infrastructure"
    assert plain[-1].split()[0] == "total"


def test_the_recent_ring_names_caller_and_project_and_filters_by_them(served: tuple[Mailbox, Bridge]) -> None:
    box, _ = served
    conn, _token = registered(box, "RecentRed")
    try:
        conn.call_tool("fetch_inbox", {"project_key": PROJECT})
    finally:
        conn.close()
    box.call("ensure_project", human_key="/elsewhere")
    mine = read(box, "resource://tooling/recent/600?agent=recentred")
    assert mine["window_seconds"] == 600
    assert mine["count"] == len(mine["entries"]) >= 2
    assert [e["tool"] for e in mine["entries"]][:2] == ["fetch_inbox", "register_agent"]  # newest first
    first = mine["entries"][0]
    assert set(first) == {"timestamp", "tool", "ok", "project", "agent", "cluster"}
    assert first["agent"] == "RecentRed"
    assert first["project"] == "work-tooling"
    assert first["cluster"] == "messaging"
    elsewhere = read(box, "resource://tooling/recent/600?project=/elsewhere")["entries"]
    assert elsewhere
    assert {e["project"] for e in elsewhere} == {"elsewhere"}
    assert read(box, "resource://tooling/recent/600?agent=NobodyAtAll")["entries"] == []
    with pytest.raises(InvalidArgument, match="window_seconds"):
        read(box, "resource://tooling/recent/soon")
    with pytest.raises(InvalidArgument, match="window_seconds"):
        read(box, "resource://tooling/recent/0")


def test_secrets_never_appear_in_config_environment_or_recent(served: tuple[Mailbox, Bridge]) -> None:
    box, _ = served
    conn, token = registered(box, "SecretSage")
    body_secret = f"body-{secrets.token_hex(8)}"
    try:
        conn.call_tool("send_message", {"project_key": PROJECT, "to": ["SecretSage"], "subject": "s",
                                        "body_md": body_secret, "sender_name": "SecretSage", "sender_token": token})
    finally:
        conn.close()
    environment = read(box, "resource://config/environment")
    recent = read(box, "resource://tooling/recent/3600")
    metrics = read(box, "resource://tooling/metrics")
    text = json.dumps([environment, recent, metrics])
    for secret in [*SECRETS.values(), *URL_SECRETS.values(), token, body_secret]:
        assert secret not in text
    settings = environment["settings"]
    assert settings["http_bearer_token"] == settings["http_jwt_secret"] == "<redacted>"
    assert settings["http_rate_limit_redis_url"] == "redis://<redacted>@127.0.0.1:1/0"
    assert settings["http_jwt_jwks_url"] == "https://<redacted>@example.invalid/jwks?token=<redacted>"
    assert settings["llm_max_tokens"] == 512  # a name with "tokens" in it is not a secret
    assert environment["environment_variables"]["HTTP_BEARER_TOKEN"] == "<redacted>"
    assert "OPENAI_API_KEY" in environment["provider_keys_set"]
    assert {"http_bearer_token", "http_jwt_secret", "http_jwt_jwks_url"} <= set(environment["redacted"])
    assert environment["http"]["enabled"] is True
    assert environment["database"].endswith("mail.sqlite3")
    # Nor in what the daemon keeps: the metrics table holds tool names and figures only.
    db = sqlite3.connect(f"file:{box.paths.db}?mode=ro", uri=True)
    try:
        kept = json.dumps(db.execute("SELECT * FROM tool_metrics").fetchall())
    finally:
        db.close()
    assert token not in kept
    assert body_secret not in kept


def test_locks_name_the_daemon_as_the_live_holder(served: tuple[Mailbox, Bridge]) -> None:
    box, _ = served
    report = read(box, "resource://tooling/locks")
    by_name = {lock["name"]: lock for lock in report["locks"]}
    pid = box.status()["pid"]  # type: ignore[index]
    assert by_name["instance"]["owner_pid"] == pid
    assert by_name["instance"]["held"] is True
    assert by_name["instance"]["status"] == "active"
    assert by_name["instance"]["owner_alive"] is True
    assert by_name["socket"]["owner_pid"] == pid
    assert by_name["socket"]["present"] is True
    assert by_name["status"]["status"] == "active"
    assert report["summary"]["total"] == len(report["locks"])
    assert report["summary"]["stale"] == 0
    # A git lock a killed writer left in the archive shows up (stale once it is old).
    leftover = box.paths.archive / "index.lock"
    leftover.write_text("")
    old = time.time() - 3600
    os.utime(leftover, (old, old))
    try:
        stale = {lock["name"]: lock for lock in read(box, "resource://tooling/locks")["locks"]}["index.lock"]
    finally:
        leftover.unlink()
    assert stale["category"] == "archive"
    assert stale["status"] == "stale"


def test_directory_schemas_and_capabilities_describe_the_registered_tools(served: tuple[Mailbox, Bridge]) -> None:
    box, _ = served
    directory = read(box, "resource://tooling/directory")
    tools = {t["name"]: t for c in directory["clusters"] for t in c["tools"]}
    assert directory["total"] == len(tools)
    assert "send_message" in tools
    assert tools["send_message"]["core"] is True
    assert tools["send_message"]["required"] == ["body_md", "subject"]
    titles = {c["name"]: c["title"] for c in directory["clusters"]}
    assert titles["messaging"] == "Messaging Lifecycle"
    assert all(step in tools for playbook in directory["playbooks"] for step in playbook["steps"])
    assert directory["metrics_uri"] == "resource://tooling/metrics"
    send = read(box, "resource://tooling/schemas")["tools"]["send_message"]
    assert send["required"] == {"subject": "string", "body_md": "string"}
    assert send["optional"]["to"] == "string|array"
    assert send["optional"]["ack_required"] == "boolean"
    conn, _token = registered(box, "CapableCoral")
    conn.close()
    caps = read(box, f"resource://tooling/capabilities/CapableCoral?project={PROJECT}")
    assert caps["agent"] == "CapableCoral"
    assert caps["project"] == "work-tooling"
    assert "messaging" in caps["capabilities"]
    assert "send_message" in caps["tools"]["messaging"]
    assert "health_check" in caps["http_reader_tools"]
    assert "send_message" not in caps["http_reader_tools"]
    with pytest.raises(NotFound):
        read(box, "resource://tooling/capabilities/NoSuchAgent")


def test_metrics_survive_a_restart_and_a_crash_after_a_flush(mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_MAIL_TOOL_METRICS_FLUSH_SECONDS", "0.2")
    with mailbox.client() as conn:
        for _ in range(3):
            conn.call_tool("ensure_project", {"human_key": PROJECT})
        with pytest.raises(NotFound):
            conn.call_tool("whois", {"project_key": PROJECT, "agent_name": "Ghost"})

    def counts() -> dict[str, tuple[int, int]]:
        return {r["name"]: (r["calls"], r["errors"]) for r in read(mailbox, "resource://tooling/metrics")["tools"]}

    assert counts()["ensure_project"] == (3, 0)
    mailbox.stop()  # a clean stop flushes at shutdown
    kept = counts()  # auto-starts a new daemon
    assert kept["ensure_project"] == (3, 0)
    assert kept["whois"] == (1, 1)
    mailbox.call("ensure_project", human_key=PROJECT)
    deadline = time.monotonic() + 30
    while read(mailbox, "resource://tooling/metrics")["recording"]["unflushed_tools"]:  # the periodic flush
        assert time.monotonic() < deadline, "the periodic flush never ran"
        time.sleep(0.05)
    pid = mailbox.status()["pid"]  # type: ignore[index]
    os.kill(pid, signal.SIGKILL)  # no shutdown flush: only what the periodic flush wrote survives
    deadline = time.monotonic() + 30
    while pid_alive(pid):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert counts()["ensure_project"] == (4, 0)


# --- the recorder itself, over a real store -----------------------------------------------------

pytest_anyio = pytest.mark.anyio


@pytest_anyio
async def test_the_ring_is_bounded_and_keeps_no_arguments_but_project_and_agent(tmp_path: Path) -> None:
    async with open_store(tmp_path / "mail.sqlite3", Settings()) as store:
        metrics = ToolMetrics(store, ring_size=5)
        for n in range(12):
            metrics.record("send_message", 1_000_000, True, {"project_key": "/p", "sender_name": f"Agent{n}",
                                                             "body_md": "secret body", "sender_token": "tok"})
        entries = await metrics.describe_recent(3600, None, None)
        assert [e["agent"] for e in entries] == [f"Agent{n}" for n in (11, 10, 9, 8, 7)]
        assert "secret body" not in repr(metrics._ring)
        assert "tok" not in repr(metrics._ring)
        assert await metrics.describe_recent(3600, "agent9", "p") == [entries[2]]
        assert await metrics.describe_recent(3600, None, "/other") == []


@pytest_anyio
async def test_percentiles_come_from_the_histogram_and_a_flush_round_trips(tmp_path: Path) -> None:
    async with open_store(tmp_path / "mail.sqlite3", Settings()) as store:
        metrics = ToolMetrics(store)
        for ms in range(1, 101):
            metrics.record("fetch_inbox", ms * 1_000_000, ms % 10 != 0, {})
        row = metrics.tools()[0]
        assert (row["calls"], row["errors"]) == (100, 10)
        assert abs(row["p50_ms"] - 50) / 50 < 0.07
        assert abs(row["p95_ms"] - 95) / 95 < 0.07
        assert await metrics.flush() == 1
        assert await metrics.flush() == 0
        again = ToolMetrics(store)
        await again.load()
        assert again.tools() == metrics.tools()


def test_histogram_buckets_are_monotonic_and_tight() -> None:
    previous = -1
    for micros in [*range(0, 300), 1_000, 12_345, 999_999, 10**9]:
        index = bucket_of(micros)
        assert index >= previous
        previous = index
        assert abs(bucket_value(index) - micros) <= max(1.0, micros * 0.07)
