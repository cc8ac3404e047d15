"""The lean dispatcher answers exactly what the SDK path answers (issue 15's golden test).

One daemon, two connections: one on the lean path, one whose hello asks for the SDK path
(`fast_path: false`, what `transport_fast_path = false` does daemon-wide). Every registered tool is
called with arguments built from its schema (valid ones, an unknown parameter, a wrong type) and
every resource template is read, in both protocol eras, on both connections. Results of writes
differ between two calls (new ids, timestamps), so each case runs SDK, SDK, lean: fields that
differ between the two SDK answers are volatile; every other field must be equal, and the JSON
shape (keys and value types) must be equal everywhere.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from maild.mcp_surface.server import build_registries
from shared.client import ensure_started, stop_daemon
from shared.paths import MailboxPaths
from shared.protocol import LEGACY_PROTOCOL_VERSION
from tests.conftest import git_init

TOOLS, RESOURCES = build_registries()
MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientCapabilities": {}}
VOLATILE = "<volatile>"


class Conn:
    """A raw socket client speaking one era, on the lean or the SDK path."""

    def __init__(self, paths: MailboxPaths, *, fast_path: bool, era: str, session: str,
                 agent: tuple[str, str] | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(str(paths.socket))
        self.file = self.sock.makefile("rwb")
        self.era = era
        self.next_id = 0
        hello: dict[str, Any] = {"session": session, "client": "golden", "fast_path": fast_path}
        if agent is not None:
            hello["agent"], hello["token"] = agent
        self.send({"jsonrpc": "2.0", "method": "maild/hello", "params": hello})
        if era == "legacy":
            self.request("initialize", {"protocolVersion": LEGACY_PROTOCOL_VERSION, "capabilities": {},
                                        "clientInfo": {"name": "golden", "version": "0"}})
            self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, frame: dict[str, Any]) -> None:
        self.file.write(json.dumps(frame).encode() + b"\n")
        self.file.flush()

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        if self.era == "modern" and method != "initialize":
            params = {**params, "_meta": MODERN_META}
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        answer: dict[str, Any] = json.loads(self.file.readline())
        assert answer.get("id") == self.next_id, answer
        return answer

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def sample(name: str, schema: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """A plausible value for parameter `name`: known domain values first, then by JSON type."""
    if name in ctx:
        return ctx[name]
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    if kind == "array":
        return ["src/*.py"] if "path" in name else ["GoldenBob"]
    if kind == "object":
        return {}
    return "golden"


def arguments_for(spec: Any, ctx: dict[str, Any]) -> dict[str, Any]:
    schema = spec.input_schema()
    properties = schema.get("properties", {})
    return {k: sample(k, properties[k], ctx) for k in schema.get("required", [])}


def wrong_type(spec: Any, ctx: dict[str, Any]) -> dict[str, Any] | None:
    args = arguments_for(spec, ctx)
    if not args:
        return None
    first = next(iter(args))
    return {**args, first: {"not": ["what", "it", "takes"]}}


def masked(a: Any, b: Any) -> Any:
    """`a` with every value that differs from `b` (same place) replaced by VOLATILE."""
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return {k: masked(a[k], b[k]) for k in a}
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [masked(x, y) for x, y in zip(a, b, strict=True)]
    if isinstance(a, str) and isinstance(b, str) and a != b and _is_json(a) and _is_json(b):
        return json.dumps(masked(json.loads(a), json.loads(b)), sort_keys=True)
    return a if a == b else VOLATILE


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return text[:1] in "{["


def shape(a: Any) -> Any:
    if isinstance(a, dict):
        return {k: shape(v) for k, v in a.items()}
    if isinstance(a, list):
        return [shape(x) for x in a]
    return type(a).__name__


def apply_mask(value: Any, mask: Any) -> Any:
    if mask == VOLATILE:
        return VOLATILE
    if isinstance(mask, dict) and isinstance(value, dict) and value.keys() == mask.keys():
        return {k: apply_mask(value[k], mask[k]) for k in value}
    if isinstance(mask, list) and isinstance(value, list) and len(value) == len(mask):
        return [apply_mask(v, m) for v, m in zip(value, mask, strict=True)]
    if isinstance(mask, str) and isinstance(value, str) and mask != value and _is_json(value) and _is_json(mask):
        return json.dumps(apply_mask(json.loads(value), json.loads(mask)), sort_keys=True)
    return value


def strip_ids(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "id"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailboxPaths]:
    paths = MailboxPaths(git_init(tmp_path_factory.mktemp("golden") / "repo"))
    os.environ.pop("AGENT_MAIL_BACKEND", None)
    ensure_started(paths)
    try:
        yield paths
    finally:
        stop_daemon(paths, force=True)


@pytest.fixture(scope="module")
def context(daemon: MailboxPaths) -> dict[str, Any]:
    """Domain values the generated arguments use: a project, two agents, a message, a thread."""
    conn = Conn(daemon, fast_path=False, era="modern", session="golden-setup")
    try:
        for name in ("GoldenBob", "GoldenAlice"):  # the session binds the last one
            registered = conn.request("tools/call", {"name": "register_agent", "arguments": {
                "project_key": "/golden", "program": "test", "model": "m", "name": name,
                "rebind": True}})  # a bound session names its second identity on purpose
        sent = conn.request("tools/call", {"name": "send_message", "arguments": {
            "project_key": "/golden", "sender_name": "GoldenAlice", "to": ["GoldenBob"],
            "subject": "Golden thread", "body_md": "héllo ✓ body", "thread_id": "golden-thread"}})
    finally:
        conn.close()
    assert not sent["result"]["isError"], sent
    return {"project_key": "/golden", "human_key": "/golden", "agent_name": "GoldenBob", "sender_name": "GoldenAlice",
            "to": ["GoldenBob"], "subject": "Golden", "body_md": "body", "message_id": 1, "thread_id": "golden-thread",
            "program": "test", "model": "m", "name": "GoldenCarol", "query": "golden",
            "paths": ["src/*.py"], "tool_name": "health_check", "agent": "GoldenBob", "project": "golden",
            "id": "1", "uri": "resource://agents/golden", "window_seconds": 3600,
            "_as": ("GoldenAlice", registered["result"]["structuredContent"]["registration_token"])}


def cases(ctx: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    out: list[tuple[str, str, dict[str, Any]]] = [("tools/list", "tools/list", {})]
    for spec in TOOLS.all():
        valid = arguments_for(spec, ctx)
        if spec.name == "wait_for_mail":  # its 60 s default would wait out each case: time out in 1 s
            valid["timeout_seconds"] = 1
        out.append((f"{spec.name} valid", "tools/call", {"name": spec.name, "arguments": valid}))
        out.append((f"{spec.name} unknown parameter", "tools/call",
                    {"name": spec.name, "arguments": {**arguments_for(spec, ctx), "bogus_parameter": 1}}))
        bad = wrong_type(spec, ctx)
        if bad is not None:
            out.append((f"{spec.name} wrong type", "tools/call", {"name": spec.name, "arguments": bad}))
    out.append(("unknown tool", "tools/call", {"name": "no_such_tool", "arguments": {}}))
    for resource in RESOURCES.all():
        uri = resource.template
        for param in [p.strip("{}*") for p in uri.split("{")[1:]]:
            uri = uri.replace("{" + param.split("}")[0] + "}", str(ctx.get(param.split("}")[0], "golden")))
            uri = uri.replace("{" + param.split("}")[0] + "*}", str(ctx.get(param.split("}")[0], "golden")))
        out.append((f"resource {resource.template}", "resources/read", {"uri": uri}))
    out.append(("unknown resource", "resources/read", {"uri": "resource://no-such-thing/x"}))
    return out


@pytest.mark.parametrize("era", ["modern", "legacy"])
def test_every_tool_and_resource_answers_the_same_json_on_the_lean_and_sdk_paths(
    daemon: MailboxPaths, context: dict[str, Any], era: str
) -> None:
    mismatches = []
    for n, (label, method, params) in enumerate(cases(context)):
        # Background work (the archiver draining the outbox) may change health_check or archive_doctor
        # between two calls; a real difference between the paths shows on every attempt.
        for attempt in range(3):
            mismatch = compare_paths(daemon, context, era, f"{n}-{attempt}", method, params)
            if mismatch is None:
                break
        else:
            mismatches.append(f"{label}:\n{mismatch}")
    assert not mismatches, "\n".join(mismatches)


def compare_paths(daemon: MailboxPaths, context: dict[str, Any], era: str, case: str, method: str,
                  params: dict[str, Any]) -> str | None:
    """Ask twice through the SDK and once through the lean path; None when the lean answer matches."""
    # Fresh connections per call, each bound to the same agent: one case's binding changes
    # (register_agent binds its caller) cannot leak into the next.
    answers = []
    for fast_path in (False, False, True):
        conn = Conn(daemon, fast_path=fast_path, era=era, session=f"golden-{era}-{case}-{len(answers)}",
                    agent=context["_as"])
        try:
            answers.append(strip_ids(conn.request(method, params)))
        finally:
            conn.close()
    first, second, ours = answers
    mask = masked(first, second)
    if shape(ours) != shape(second) or apply_mask(ours, mask) != apply_mask(second, mask):
        return f"  sdk:  {json.dumps(second)[:600]}\n  lean: {json.dumps(ours)[:600]}"
    return None


def test_the_golden_cases_cover_every_registered_tool_and_resource(context: dict[str, Any]) -> None:
    labels = " ".join(label for label, _, _ in cases(context))
    assert all(f"{spec.name} valid" in labels for spec in TOOLS.all())
    assert all(f"resource {r.template}" in labels for r in RESOURCES.all())
    assert Path(__file__).name == "test_lean_dispatch.py"
