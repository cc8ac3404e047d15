"""wait_for_mail against a real daemon (both backends): woken by another agent's send, timeout,
cancellation and hang-up mid-wait (no waiter, task or descriptor left: health_check and /proc), and
64 concurrent waiters answered by one send. Both request paths: lean and SDK (hello fast_path false).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from shared.client import envelope_meta
from shared.errors import InvalidArgument
from tests.conftest import Mailbox

PROJECT = "/push"


class Raw:
    """A raw socket client: requests are sent without waiting, answers read when the test wants them."""

    def __init__(self, box: Mailbox, hello: dict[str, Any]) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(str(box.paths.socket))
        self.file = self.sock.makefile("rwb")
        self.send({"jsonrpc": "2.0", "method": "maild/hello", "params": hello})

    def send(self, frame: dict[str, Any]) -> None:
        self.file.write(json.dumps(frame).encode() + b"\n")
        self.file.flush()

    def call(self, request_id: int, tool: str, arguments: dict[str, Any]) -> None:
        self.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                   "params": {"name": tool, "arguments": arguments, "_meta": envelope_meta()}})

    def answer(self) -> dict[str, Any]:
        while True:
            frame: dict[str, Any] = json.loads(self.file.readline())
            if "id" in frame:
                result: dict[str, Any] = frame["result"]
                return result

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def setup_agents(box: Mailbox) -> dict[str, str]:
    tokens = {}
    for name in ("PushAlice", "PushBob"):
        registered = box.call("register_agent", project_key=PROJECT, program="t", model="m", name=name)
        tokens[name] = registered["registration_token"]
    return tokens


def waiters(box: Mailbox) -> int:
    return int(box.call("health_check")["wait_for_mail"]["waiters"])


def until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def send(box: Mailbox, tokens: dict[str, str], subject: str, to: str = "PushBob") -> int:
    sent = box.call("send_message", project_key=PROJECT, sender_name="PushAlice", sender_token=tokens["PushAlice"],
                    to=[to], subject=subject, body_md="hi")
    return int(sent["deliveries"][0]["payload"]["id"])


def bob(box: Mailbox, tokens: dict[str, str], fast_path: bool) -> Raw:
    return Raw(box, {"session": f"bob-{time.monotonic_ns()}", "agent": "PushBob", "token": tokens["PushBob"],
                     "fast_path": fast_path})


def open_fds(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def test_wait_for_mail(mailbox: Mailbox) -> None:
    tokens = setup_agents(mailbox)
    for fast_path in (True, False):
        # Woken by another agent's send; the answer carries that message and where to go on from.
        conn = bob(mailbox, tokens, fast_path)
        conn.call(1, "wait_for_mail", {"project_key": PROJECT, "timeout_seconds": 60})
        until(lambda: waiters(mailbox) == 1, "the waiter to register")
        sent_id = send(mailbox, tokens, f"wake {fast_path}")
        woken = conn.answer()["structuredContent"]
        assert [m["id"] for m in woken["result"]] == [sent_id]
        assert (woken["timed_out"], woken["last_id"], woken["agent"]) == (False, sent_id, "PushBob")
        # since_id: mail already there returns at once, without waiting.
        conn.call(2, "wait_for_mail", {"project_key": PROJECT, "since_id": sent_id - 1, "timeout_seconds": 60})
        assert [m["id"] for m in conn.answer()["structuredContent"]["result"]] == [sent_id]
        # Timeout: an empty answer; mail to somebody else does not wake Bob.
        conn.call(3, "wait_for_mail", {"project_key": PROJECT, "timeout_seconds": 1})
        until(lambda: waiters(mailbox) == 1, "the waiter to register")
        send(mailbox, tokens, "not for bob", to="PushAlice")
        quiet = conn.answer()["structuredContent"]
        assert (quiet["result"], quiet["timed_out"], quiet["last_id"]) == ([], True, sent_id)
        # Bob's own send writes his agents row, which wakes his waiter (routing goes by the agents
        # rows a mail commit wrote): it finds nothing for him, waits on, and times out empty.
        conn.call(4, "wait_for_mail", {"project_key": PROJECT, "timeout_seconds": 3})
        until(lambda: waiters(mailbox) == 1, "the waiter to register")
        woken = mailbox.call("health_check")["wait_for_mail"]["woken"]
        mailbox.call("send_message", project_key=PROJECT, sender_name="PushBob", sender_token=tokens["PushBob"],
                     to=["PushAlice"], subject=f"from bob {fast_path}", body_md="hi")
        own = conn.answer()["structuredContent"]
        assert (own["result"], own["timed_out"], own["last_id"]) == ([], True, sent_id)
        assert mailbox.call("health_check")["wait_for_mail"]["woken"] > woken, "woken, re-checked, waited on"
        conn.close()
    assert waiters(mailbox) == 0
    with pytest.raises(InvalidArgument, match="between 1 and 300"):
        mailbox.call("wait_for_mail", project_key=PROJECT, agent_name="PushBob", registration_token=tokens["PushBob"],
                     timeout_seconds=301)


def cancel_and_hang_up(box: Mailbox, tokens: dict[str, str], fast_path: bool) -> None:
    # notifications/cancelled for the pending request ends it.
    conn = bob(box, tokens, fast_path)
    conn.call(7, "wait_for_mail", {"project_key": PROJECT, "timeout_seconds": 300})
    until(lambda: waiters(box) == 1, "the waiter to register")
    conn.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}})
    until(lambda: waiters(box) == 0, "the cancelled wait to end")
    conn.close()
    # A dropped connection ends its wait at once (not after 300 s), and its session closes.
    conn = bob(box, tokens, fast_path)
    conn.call(1, "wait_for_mail", {"project_key": PROJECT, "timeout_seconds": 300})
    until(lambda: waiters(box) == 1, "the waiter to register")
    conn.close()
    until(lambda: waiters(box) == 0, "the hung-up wait to end")
    until(lambda: box.call("health_check")["sessions"]["live"] == 1, "the sessions to close (health's own is live)")


def test_cancel_and_hang_up_end_the_wait_and_leak_nothing(mailbox: Mailbox) -> None:
    tokens = setup_agents(mailbox)
    status = mailbox.status()
    assert status is not None
    pid = int(status["pid"])
    for fast_path in (True, False):  # warm-up: the SDK and the archive's git open what they keep open
        cancel_and_hang_up(mailbox, tokens, fast_path)
    baseline = open_fds(pid)
    for _ in range(2):
        for fast_path in (True, False):
            cancel_and_hang_up(mailbox, tokens, fast_path)
    until(lambda: open_fds(pid) <= baseline, f"the daemon's descriptors to return to {baseline}")
    counts = mailbox.call("health_check")["wait_for_mail"]
    assert (counts["waiters"], counts["agents"], counts["woken"], counts["subscriptions"]) == (0, 0, 0, 0)


def test_64_waiters_woken_by_one_send(mailbox: Mailbox) -> None:
    tokens = setup_agents(mailbox)
    conns = [bob(mailbox, tokens, fast_path=n % 2 == 0) for n in range(64)]
    try:
        for conn in conns:
            conn.call(1, "wait_for_mail", {"project_key": PROJECT, "timeout_seconds": 120})
        until(lambda: waiters(mailbox) == 64, "64 waiters")
        sent_id = send(mailbox, tokens, "everyone")
        for conn in conns:
            assert [m["id"] for m in conn.answer()["structuredContent"]["result"]] == [sent_id]
    finally:
        for conn in conns:
            conn.close()
    assert mailbox.call("health_check")["wait_for_mail"]["woken"] == 64


def unread_hint(conn: Raw, request_id: int) -> Any:
    conn.call(request_id, "health_check", {})
    return conn.answer().get("_meta", {}).get("agent_mail/unread")


def test_unread_hint_appears_when_the_count_changes(mailbox: Mailbox) -> None:
    tokens = setup_agents(mailbox)
    for fast_path in (True, False):
        conn = bob(mailbox, tokens, fast_path)
        first = unread_hint(conn, 1)
        assert first is None or first["count"] > 0  # a session's first call tells only of unread mail
        sent_id = send(mailbox, tokens, f"hint {fast_path}")
        mailbox.call("send_message", project_key=PROJECT, sender_name="PushAlice", sender_token=tokens["PushAlice"],
                     to=["PushBob"], subject="urgent", body_md="now", importance="urgent")
        told = unread_hint(conn, 2)
        assert told is not None
        assert told["urgent"] >= 1
        assert unread_hint(conn, 3) is None, "unchanged counts are not repeated"
        conn.call(4, "mark_message_read", {"project_key": PROJECT, "message_id": sent_id})
        after_read = conn.answer()
        assert after_read["structuredContent"]["read"] is True
        assert after_read["_meta"]["agent_mail/unread"]["count"] == told["count"] - 1
        conn.close()


def test_mailctl_watch_prints_mail_as_it_arrives(module_mailbox: Mailbox) -> None:
    import subprocess
    import sys

    box = module_mailbox
    tokens = setup_agents(box)
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "mailctl", "watch", "--project", PROJECT, "--json", "--count", "2"],
        env=box.env, cwd=box.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        until(lambda: waiters(box) == 1, "mailctl watch to wait")
        first = send(box, tokens, "one", to="HumanOperator")
        second = send(box, tokens, "two", to="HumanOperator")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(m["id"], m["subject"], m["from"]) for m in lines] == [
        (first, "one", "PushAlice"), (second, "two", "PushAlice")]
    text = box.mailctl("watch", "--project", PROJECT, "--since-id", str(first), "--count", "1").stdout
    assert text.strip().endswith(f"#{second}  PushAlice: two")
