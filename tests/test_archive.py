"""The Git archive against real daemons and real git: formats, group commits, crashes, failures, rebuild."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest

from maild.archive import formats
from maild.archive.committer import FastImportCommitter, branch_head, head_files, read_blobs
from shared.client import DaemonClient
from shared.errors import MailError
from shared.paths import pid_alive
from tests.conftest import Mailbox

PROJECT = "/work/app"


def agent(mailbox: Mailbox, name: str) -> DaemonClient:
    conn = mailbox.client(hello={"session": f"s-{name}", "client": "test", "pid": 1})
    conn.call_tool("register_agent", {"project_key": PROJECT, "program": "p", "model": "m", "name": name})
    return conn


def send(conn: DaemonClient, to: str, subject: str = "status", **extra: Any) -> dict[str, Any]:
    result = conn.call_tool("send_message", {"project_key": PROJECT, "to": to, "subject": subject,
                                             "body_md": f"body of {subject}", **extra})
    return result["deliveries"][0]["payload"]  # type: ignore[no-any-return]


def wait_drained(mailbox: Mailbox, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        report = mailbox.call("health_check")
        if report["archive"]["queue_depth"] == 0 and report["archive"].get("ok", True):
            return report  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"archive did not drain: {report['archive']}"
        time.sleep(0.05)


def git(mailbox: Mailbox, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(mailbox.paths.archive), *args], capture_output=True, text=True,
                          check=True).stdout


def canonical_files(mailbox: Mailbox) -> dict[int, str]:
    found: dict[int, str] = {}
    for path in head_files(mailbox.paths.archive):
        match = formats.MESSAGE_FILE.match(path)
        if match:
            assert int(match["id"]) not in found, f"message {match['id']} archived twice"
            found[int(match["id"])] = path
    return found


def test_a_message_file_parses_back_to_the_database_row(mailbox: Mailbox) -> None:
    a, b = agent(mailbox, "BlueLake"), agent(mailbox, "GreenCastle")
    b_id = b.call_tool("register_agent", {"project_key": PROJECT, "program": "p", "model": "m",
                                          "name": "GreenCastle"})["id"]
    sent = send(a, "GreenCastle", subject="Ünïcode & `code` / slashes", cc=["BlueLake"], thread_id="FEAT-7",
                importance="high", ack_required=True)
    wait_drained(mailbox)
    path = canonical_files(mailbox)[sent["id"]]
    assert path.startswith("projects/work-app/messages/20")
    assert path.endswith(f"__n-code-code-slashes__{sent['id']}.md")
    text = read_blobs(mailbox.paths.archive, [path])[path].decode()
    meta, body = formats.parse_message(text)
    row = a.read_resource(f"resource://message/{sent['id']}")
    assert meta == {
        "id": row["id"], "thread_id": "FEAT-7", "project": PROJECT, "project_slug": "work-app", "from": "BlueLake",
        "to": row["to"], "cc": row["cc"], "bcc": row["bcc"], "subject": row["subject"],
        "importance": "high", "ack_required": True, "created": row["created_ts"], "attachments": [],
        "agent_ids": {"BlueLake": row["sender_id"], "GreenCastle": b_id},
    }
    assert body == row["body_md"]
    assert list(json.loads(text.split("\n---\n")[0].removeprefix("---json\n"))) == sorted(meta), "sorted keys"
    files = head_files(mailbox.paths.archive)
    name = path.rsplit("/", 1)[1]
    assert any(p.endswith(f"agents/BlueLake/outbox/{path.split('/')[3]}/{path.split('/')[4]}/{name}") for p in files)
    assert any(p.endswith(f"agents/GreenCastle/inbox/{path.split('/')[3]}/{path.split('/')[4]}/{name}") for p in files)
    assert "projects/work-app/messages/threads/FEAT-7.md" in files
    assert "projects/work-app/agents/BlueLake/profile.json" in files
    a.close()
    b.close()


def test_many_sends_become_few_commits_with_descriptive_messages(mailbox: Mailbox) -> None:
    a, b = agent(mailbox, "BlueLake"), agent(mailbox, "GreenCastle")
    wait_drained(mailbox)
    before = int(git(mailbox, "rev-list", "--count", "main"))
    for i in range(60):
        send(a, "GreenCastle", subject=f"update {i}")
    wait_drained(mailbox)
    commits = int(git(mailbox, "rev-list", "--count", "main")) - before
    assert 1 <= commits < 30, f"60 sends made {commits} commits"
    log = git(mailbox, "log", "--format=%B%x00")
    assert "mail: BlueLake -> GreenCastle | update 0" in log
    assert "Agent: BlueLake" in log
    single = send(a, "GreenCastle", subject="alone")
    wait_drained(mailbox)
    assert git(mailbox, "log", "-1", "--format=%s").strip() == "mail: BlueLake -> GreenCastle | alone"
    assert single["id"] in canonical_files(mailbox)
    a.close()
    b.close()


def test_kill_9_under_load_loses_no_acknowledged_message(mailbox: Mailbox) -> None:
    mailbox.call("ensure_project", human_key=PROJECT)
    names = [f"Writer{i}" for i in range(16)]
    for name in names:
        agent(mailbox, name).close()
    acked: list[int] = []
    lock = threading.Lock()
    rng = random.Random(42)
    for round_no in range(3):
        stop = threading.Event()

        def load(name: str, stop: threading.Event = stop) -> None:
            try:
                conn = mailbox.client(hello={"session": f"s-{name}", "client": "test", "pid": 1}, autostart=False)
            except MailError:
                return
            with conn:
                while not stop.is_set():
                    try:
                        payload = send(conn, "Writer0", subject=f"load {name}")
                    except (MailError, OSError, ValueError):
                        return  # the daemon died under us: this request was never acknowledged
                    with lock:
                        acked.append(payload["id"])

        pid = mailbox.call("health_check")["pid"]
        threads = [threading.Thread(target=load, args=(n,)) for n in names]
        for t in threads:
            t.start()
        time.sleep(0.2 + rng.random() * 0.8)
        os.kill(pid, signal.SIGKILL)
        for t in threads:
            t.join(timeout=30)
        stop.set()
        deadline = time.monotonic() + 10
        while pid_alive(pid):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert acked, f"round {round_no}: no message was acknowledged before the kill"
    wait_drained(mailbox, timeout=60)
    conn = apsw.Connection(str(mailbox.paths.db), flags=apsw.SQLITE_OPEN_READONLY)
    in_db = [row[0] for row in conn.execute("SELECT id FROM messages")]
    conn.close()
    assert len(in_db) == len(set(in_db))
    assert set(acked) <= set(in_db), "an acknowledged send is missing from the database"
    archived = canonical_files(mailbox)
    assert set(in_db) == set(archived), "database and archive disagree after crash recovery"


def test_stale_git_locks_left_by_a_crashed_git_are_removed_at_start(mailbox: Mailbox) -> None:
    a = agent(mailbox, "BlueLake")
    wait_drained(mailbox)
    a.close()
    mailbox.stop()
    stale = ("index.lock", "HEAD.lock", "packed-refs.lock", "refs/heads/main.lock", "refs/heads/other.lock")
    for lock in stale:
        (mailbox.paths.archive / lock).write_text("stale")
    b = agent(mailbox, "GreenCastle")
    sent = send(b, "BlueLake")
    wait_drained(mailbox)
    assert sent["id"] in canonical_files(mailbox)
    left = [lock for lock in stale if (mailbox.paths.archive / lock).exists()]
    assert left == [], f"stale locks survived the start: {left}"
    b.close()


def wait_degraded(mailbox: Mailbox) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        report = mailbox.call("health_check")
        if report["status"] == "degraded":
            return report  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"health never went degraded: {report['archive']}"
        time.sleep(0.05)


def test_a_ref_lock_held_during_sends_keeps_the_queue_until_it_is_released(mailbox: Mailbox) -> None:
    a, b = agent(mailbox, "BlueLake"), agent(mailbox, "GreenCastle")
    wait_drained(mailbox)
    head = git(mailbox, "rev-parse", "main").strip()
    held = mailbox.paths.archive / "refs/heads/main.lock"
    held.write_text(head + "\n")  # another git process is updating the branch
    try:
        sent = [send(a, "GreenCastle", subject=f"while locked {i}") for i in range(3)]
        report = wait_degraded(mailbox)
        assert report["archive"]["ok"] is False
        assert "main.lock" in report["archive"]["last_error"] or "refs/heads/main" in report["archive"]["last_error"]
        assert report["archive"]["queue_depth"] >= 3, "nothing may count as archived while the ref cannot move"
        assert git(mailbox, "rev-parse", "main").strip() == head
        assert held.exists(), "a lock that appears while the daemon runs belongs to someone else"
    finally:
        held.unlink()
    wait_drained(mailbox, timeout=60)
    assert {m["id"] for m in sent} <= set(canonical_files(mailbox))
    assert mailbox.call("health_check")["status"] == "ok"
    a.close()
    b.close()
    mailbox.stop()
    assert "missing in archive" not in mailbox.mailctl("doctor").stdout


def test_an_unremovable_stale_lock_degrades_health_instead_of_stopping_the_daemon(mailbox: Mailbox) -> None:
    a = agent(mailbox, "BlueLake")
    wait_drained(mailbox)
    a.close()
    mailbox.stop()
    (mailbox.paths.archive / "refs/heads/main.lock").write_text("stale")
    restore = make_unwritable(mailbox.paths.archive)
    try:
        b = agent(mailbox, "GreenCastle")
        sent = send(b, "BlueLake", subject="lock cannot be removed")
        report = wait_degraded(mailbox)
        assert "stale git lock" in report["archive"]["last_error"]
        assert mailbox.call("health_check")["pid"] == report["pid"], "the daemon kept running"
    finally:
        restore()
    wait_drained(mailbox, timeout=60)
    assert sent["id"] in canonical_files(mailbox)
    b.close()


def make_unwritable(path: Any) -> Callable[[], None]:
    if os.geteuid() != 0:
        for p in [path, *path.rglob("*")]:
            if p.is_dir():
                p.chmod(0o500)
        return lambda: [p.chmod(0o700) for p in [path, *path.rglob("*")] if p.is_dir()] and None  # type: ignore[func-returns-value]
    if subprocess.run(["chattr", "-R", "+i", str(path)], capture_output=True, check=False).returncode != 0:
        pytest.skip("running as root without chattr +i: cannot make the archive unwritable")
    return lambda: subprocess.run(["chattr", "-R", "-i", str(path)], check=True) and None  # type: ignore[func-returns-value]


def test_an_unwritable_archive_never_blocks_mail_and_catches_up(mailbox: Mailbox) -> None:
    a, b = agent(mailbox, "BlueLake"), agent(mailbox, "GreenCastle")
    wait_drained(mailbox)
    restore = make_unwritable(mailbox.paths.archive)
    try:
        sent = [send(a, "GreenCastle", subject=f"while broken {i}") for i in range(5)]
        assert len(b.call_tool("fetch_inbox", {"project_key": PROJECT})["result"]) == 5, "mail still delivered"
        deadline = time.monotonic() + 20
        while True:
            report = mailbox.call("health_check")
            if report["status"] == "degraded":
                break
            assert time.monotonic() < deadline, report["archive"]
            time.sleep(0.1)
        assert report["archive"]["ok"] is False
        assert report["archive"]["last_error"]
        assert report["archive"]["queue_depth"] >= 5
    finally:
        restore()
    wait_drained(mailbox, timeout=60)
    assert {m["id"] for m in sent} <= set(canonical_files(mailbox))
    assert mailbox.call("health_check")["status"] == "ok"
    a.close()
    b.close()


def snapshot(mailbox: Mailbox, db: Any = None) -> dict[str, Any]:
    conn = apsw.Connection(str(db or mailbox.paths.db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {
            "projects": conn.execute("SELECT id, slug, human_key, created_ts FROM projects ORDER BY id").fetchall(),
            "agents": conn.execute("SELECT id, project_id, name, program, model, task_description, is_active,"
                                   " deleted_ts, inception_ts, unread_count FROM agents ORDER BY id").fetchall(),
            "messages": conn.execute("SELECT id, project_id, sender_id, thread_id, subject, body_md, importance,"
                                     " ack_required, created_ts FROM messages ORDER BY id").fetchall(),
            "recipients": conn.execute("SELECT message_id, agent_id, kind, read_ts, ack_ts FROM message_recipients"
                                       " ORDER BY message_id, agent_id").fetchall(),
            "reservations": conn.execute("SELECT id, project_id, agent_id, path_pattern, exclusive, reason,"
                                         " created_ts, expires_ts, released_ts FROM file_reservations"
                                         " ORDER BY id").fetchall(),
            "search": conn.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'body'"
                                   " ORDER BY rowid").fetchall(),
        }
    finally:
        conn.close()


def reserve(conn: DaemonClient, path: str, **extra: Any) -> int:
    result = conn.call_tool("file_reservation_paths", {"project_key": PROJECT, "paths": [path], "ttl_seconds": 3600,
                                                       **extra})
    return int(result["granted"][0]["id"])


def test_rebuild_from_the_archive_round_trips_the_database(mailbox: Mailbox) -> None:
    a, b = agent(mailbox, "BlueLake"), agent(mailbox, "GreenCastle")
    first = send(a, "GreenCastle", subject="one", cc=["BlueLake"])
    b.call_tool("reply_message", {"project_key": PROJECT, "message_id": first["id"], "body_md": "reply body"})
    third = send(b, "BlueLake", subject="three", bcc=["GreenCastle"], thread_id="T-1")
    b.call_tool("mark_message_read", {"project_key": PROJECT, "message_id": first["id"]})
    a.call_tool("acknowledge_message", {"project_key": PROJECT, "message_id": third["id"]})
    renewed = reserve(a, "src/**", exclusive=True, reason="refactor")
    a.call_tool("renew_file_reservations", {"project_key": PROJECT, "extend_seconds": 600})
    released = reserve(b, "docs/*.md", exclusive=False, reason="typos")
    b.call_tool("release_file_reservations", {"project_key": PROJECT, "paths": ["docs/*.md"]})
    shared = reserve(b, "src/**", exclusive=False, reason="reading")  # same pattern, another holder
    # BlueLake is retired by a new agent reclaiming its name; its lease is released with it.
    heir = mailbox.client(hello={"session": "s-heir", "client": "test", "pid": 1})
    heir.call_tool("register_agent", {"project_key": PROJECT, "program": "p2", "model": "m2", "name": "BlueLake",
                                      "force_reclaim": True})
    send(heir, "GreenCastle", subject="from the new BlueLake")
    send(b, "BlueLake", subject="to the new BlueLake")
    wait_drained(mailbox)
    for conn in (a, b, heir):
        conn.close()
    mailbox.stop()
    before = snapshot(mailbox)
    assert [row[1:3] for row in before["agents"]] == [(1, "BlueLake"), (1, "GreenCastle"), (1, "BlueLake")]
    assert before["agents"][0][6] == 0, "the first BlueLake is retired"
    assert before["agents"][0][7] is not None
    read_state = {(row[0], row[1]): row[3:] for row in before["recipients"]}
    assert read_state[(first["id"], 2)][0] is not None, "GreenCastle read the first message"
    assert all(read_state[(third["id"], 1)]), "the first BlueLake read and acknowledged the third"
    assert "projects/work-app/agents/BlueLake/receipts/3.json" in head_files(mailbox.paths.archive)
    by_id = {row[0]: row for row in before["reservations"]}
    assert by_id[renewed][8] is not None, "retiring released the lease"
    assert by_id[renewed][4:6] == (1, "refactor")
    assert by_id[released][8] is not None
    assert by_id[shared][8] is None
    rebuilt = mailbox.mailctl("doctor", "--rebuild", "--yes")
    assert "5 messages" in rebuilt.stdout
    assert snapshot(mailbox) == before
    assert list(mailbox.paths.state_dir.glob("mail.sqlite3.bak-*")), "the previous database is kept"
    report = json.loads(mailbox.mailctl("doctor", "--json").stdout)
    assert report["ok"] is True


def test_every_reservation_state_change_is_archived_under_its_own_id(mailbox: Mailbox) -> None:
    a, b = agent(mailbox, "BlueLake"), agent(mailbox, "GreenCastle")
    mine = reserve(a, "src/**", exclusive=True, reason="refactor")
    theirs = reserve(b, "src/**", exclusive=False, reason="reading")
    wait_drained(mailbox)

    def archived(rid: int) -> dict[str, Any]:
        path = f"projects/work-app/file_reservations/id-{rid}.json"
        return json.loads(read_blobs(mailbox.paths.archive, [path])[path])  # type: ignore[no-any-return]

    assert (archived(mine)["agent"], archived(theirs)["agent"]) == ("BlueLake", "GreenCastle")
    expires = archived(mine)["expires_ts"]
    a.call_tool("renew_file_reservations", {"project_key": PROJECT, "extend_seconds": 600})
    wait_drained(mailbox)
    assert archived(mine)["expires_ts"] > expires
    assert (archived(mine)["exclusive"], archived(mine)["reason"]) == (True, "refactor"), "renew keeps the flags"
    heir = mailbox.client(hello={"session": "s-heir", "client": "test", "pid": 1})
    heir.call_tool("register_agent", {"project_key": PROJECT, "program": "p", "model": "m", "name": "BlueLake",
                                      "force_reclaim": True})
    wait_drained(mailbox)
    assert archived(mine)["released_ts"] is not None, "retiring an agent archives the leases it releases"
    assert archived(mine)["agent_id"] != heir.call_tool("whois", {"project_key": PROJECT,
                                                                   "agent_name": "BlueLake"})["id"]
    assert archived(theirs)["released_ts"] is None
    files = head_files(mailbox.paths.archive)
    assert "projects/work-app/agents/BlueLake/profiles/1.json" in files, "the retired profile is kept by id"
    for conn in (a, b, heir):
        conn.close()


def test_rebuild_keeps_the_old_database_with_its_committed_wal(mailbox: Mailbox) -> None:
    a, b = agent(mailbox, "BlueLake"), agent(mailbox, "GreenCastle")
    for i in range(5):
        send(a, "GreenCastle", subject=f"only in the wal {i}")
    report = wait_drained(mailbox)
    a.close()
    b.close()
    os.kill(report["pid"], signal.SIGKILL)  # an unclean death: no checkpoint at shutdown
    deadline = time.monotonic() + 10
    while pid_alive(report["pid"]):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    wal = mailbox.paths.db.with_name(mailbox.paths.db.name + "-wal")
    assert wal.exists(), "precondition: committed data lives in the WAL"
    assert wal.stat().st_size > 0
    before = snapshot(mailbox)
    assert len(before["messages"]) == 5
    mailbox.mailctl("doctor", "--rebuild", "--yes")
    [backup] = mailbox.paths.state_dir.glob("mail.sqlite3.bak-*[0-9]")
    assert snapshot(mailbox, backup) == before, "the backup holds every committed transaction"


def test_doctor_finds_and_fixes_messages_missing_from_the_archive(mailbox: Mailbox) -> None:
    a, b = agent(mailbox, "BlueLake"), agent(mailbox, "GreenCastle")
    a.close()
    b.close()
    mailbox.stop()
    conn = apsw.Connection(str(mailbox.paths.db))  # simulate mail whose archive write was lost
    conn.execute("INSERT INTO messages(project_id, sender_id, subject, body_md, created_ts)"
                 " VALUES (1, 1, 'lost', 'x', '2026-01-01T00:00:00.000000Z')")
    conn.execute("INSERT INTO message_recipients(message_id, agent_id, kind) VALUES (last_insert_rowid(), 2, 'to')")
    conn.close()
    mailbox.call("health_check")
    wait_drained(mailbox)
    broken = mailbox.mailctl("doctor", check=False)
    assert broken.returncode == 1
    assert "missing in archive: 1" in broken.stdout
    mailbox.mailctl("doctor", "--fix")
    wait_drained(mailbox)
    assert "missing in archive" not in mailbox.mailctl("doctor").stdout


def test_a_long_thread_digest_is_written_in_parts_that_stop_changing_once_full(mailbox: Mailbox) -> None:
    a, b = agent(mailbox, "BlueLake"), agent(mailbox, "GreenCastle")
    total = formats.DIGEST_PART + 30
    for i in range(total):
        send(a, "GreenCastle", subject=f"step {i}", thread_id="LONG-1")
        if i == formats.DIGEST_PART - 1:
            wait_drained(mailbox)
            first_full = read_blobs(mailbox.paths.archive, ["projects/work-app/messages/threads/LONG-1.md"])
    wait_drained(mailbox)
    folder = "projects/work-app/messages/threads"
    blobs = read_blobs(mailbox.paths.archive, [f"{folder}/LONG-1.md", f"{folder}/LONG-1.part-2.md"])
    assert blobs[f"{folder}/LONG-1.md"] == first_full[f"{folder}/LONG-1.md"], "a full part is never rewritten"
    first, second = (blobs[f"{folder}/{name}"].decode() for name in ("LONG-1.md", "LONG-1.part-2.md"))
    assert first.count("\n### step ") == formats.DIGEST_PART
    assert second.count("\n### step ") == total - formats.DIGEST_PART
    assert f"### step {formats.DIGEST_PART}\n" in second
    assert "[LONG-1.md](LONG-1.md)" in second
    a.close()
    b.close()


def test_an_idle_repack_folds_fast_imports_small_packs_into_one_and_commits_go_on(tmp_path: Path) -> None:
    repo = tmp_path / "archive"
    committer = FastImportCommitter(repo, "maild", "maild@localhost")
    for i in range(6):  # 120 files a batch: over fast-import's unpack limit, so each batch is a pack
        files = {f"projects/p/notes/{i}/{j}.md": f"note {i} {j}\n".encode() * 50 for j in range(120)}
        committer.commit(files, f"batch {i}")
    pack_dir = repo / "objects" / "pack"
    assert len(list(pack_dir.glob("*.pack"))) >= 6
    assert list(pack_dir.glob("*.keep")), "fast-import keeps every pack it wrote"
    assert committer.maintain(threshold=100) is False, "below the threshold nothing happens"
    head = branch_head(repo)
    assert committer.maintain(threshold=2) is True
    assert len(list(pack_dir.glob("*.pack"))) == 1
    assert not list(pack_dir.glob("*.keep"))
    assert branch_head(repo) == head
    assert read_blobs(repo, ["projects/p/notes/0/7.md"])["projects/p/notes/0/7.md"].startswith(b"note 0 7")
    made = committer.commit({"projects/p/notes/after.md": b"after\n"}, "after the repack")
    assert branch_head(repo) == made
    assert {"projects/p/notes/5/119.md", "projects/p/notes/after.md"} <= set(head_files(repo))
    committer.close()
