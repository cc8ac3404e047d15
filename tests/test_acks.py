"""Ack deadlines (issue 17) through real daemons: the overdue scanner logs and escalates each overdue
(message, recipient) once, also across a daemon restart, in `message` and `file_reservation` modes;
the acks-stale, mailbox and mailbox-with-commits views; and the people's CLI (acks, reservations,
reserve, release, renew) as text and --json.

Scanner tests run with a 1 s deadline and a 0.2 s scan interval (config.toml in the state dir).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import apsw
import pytest

from shared.config import ConfigError, load_settings
from shared.errors import MailError, NameTaken
from tests.conftest import Mailbox, git_init
from tests.test_archive import wait_drained
from tests.test_cli_people import on_terminal

PROJECT = "/work/acks"


def configure(mailbox: Mailbox, **values: Any) -> None:
    """Settings for the daemon the first client call will start (config.toml in the state dir)."""
    mailbox.paths.state_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"{key} = {json.dumps(value)}\n" for key, value in values.items()]
    (mailbox.paths.state_dir / "config.toml").write_text("".join(lines))


def db_rows(mailbox: Mailbox, sql: str, *params: Any) -> list[Any]:
    db = apsw.Connection(str(mailbox.paths.db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


class Agent:
    def __init__(self, mailbox: Mailbox, name: str) -> None:
        self.conn = mailbox.client(hello={"session": f"s-{name}", "client": "test", "pid": 1})
        self.info = self.conn.call_tool(
            "register_agent", {"project_key": PROJECT, "program": "test", "model": "m", "name": name})
        self.name = self.info["name"]

    def send(self, **args: Any) -> dict[str, Any]:
        result = self.conn.call_tool("send_message", {"project_key": PROJECT, "subject": "s", "body_md": "b", **args})
        return result["deliveries"][0]["payload"]  # type: ignore[no-any-return]

    def call(self, tool: str, **args: Any) -> Any:
        return self.conn.call_tool(tool, {"project_key": PROJECT, **args})


def test_upstream_ack_settings_are_read_and_a_bad_mode_is_refused_with_the_choices() -> None:
    settings = load_settings(None, environ={
        "ACK_TTL_ENABLED": "true", "ACK_TTL_SECONDS": "600", "ACK_TTL_SCAN_INTERVAL_SECONDS": "5",
        "ACK_ESCALATION_ENABLED": "1", "ACK_ESCALATION_MODE": "File_Reservation",
        "ACK_ESCALATION_CLAIM_TTL_SECONDS": "900", "ACK_ESCALATION_CLAIM_EXCLUSIVE": "yes",
        "ACK_ESCALATION_CLAIM_HOLDER_NAME": "OpsBot"})
    assert settings.ack_ttl_enabled is True
    assert (settings.ack_ttl_seconds, settings.ack_ttl_scan_interval_seconds) == (600, 5)
    assert (settings.ack_escalation_enabled, settings.ack_escalation_mode) == (True, "file_reservation")
    assert (settings.ack_escalation_claim_ttl_seconds, settings.ack_escalation_claim_exclusive) == (900, True)
    assert settings.ack_escalation_claim_holder_name == "OpsBot"
    defaults = load_settings(None, environ={})
    assert (defaults.ack_ttl_enabled, defaults.ack_escalation_mode, defaults.ack_ttl_seconds) == (False, "log", 1800)
    with pytest.raises(ConfigError, match="must be one of log, message, file_reservation"):
        load_settings(None, environ={"ACK_ESCALATION_MODE": "email"})
    with pytest.raises(ConfigError, match=r"ack_ttl_seconds .* must be between 1"):
        load_settings(None, environ={"ACK_TTL_SECONDS": "0"})


def wait_for_scans(mailbox: Mailbox, count: int, handled: int = 0, timeout: float = 30) -> dict[str, Any]:
    """health_check's ack_deadlines once the scanner ran `count` times and handled `handled` pairs."""
    deadline = time.monotonic() + timeout
    while True:
        report = mailbox.call("health_check")["ack_deadlines"]
        if report["scans"] >= count and sum(report["handled"].values()) >= handled:
            return report  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"the ack scanner did not get there: {report}"
        time.sleep(0.05)


def mail_from(mailbox: Mailbox, sender: str) -> list[tuple[str, str, str]]:
    """(recipient, kind, subject) of every delivery sent by `sender`, in order."""
    return [tuple(r) for r in db_rows(  # type: ignore[misc]
        mailbox, "SELECT a.name, r.kind, m.subject FROM messages m JOIN agents s ON s.id = m.sender_id"
        " JOIN message_recipients r ON r.message_id = m.id JOIN agents a ON a.id = r.agent_id"
        " WHERE s.name = ? ORDER BY m.id, a.name", sender)]


def overdue_log_lines(mailbox: Mailbox) -> list[str]:
    return [line for line in mailbox.paths.log_file.read_text().splitlines() if "ack_overdue message=" in line]


@pytest.fixture
def agents(mailbox: Mailbox) -> Iterator[dict[str, Agent]]:
    configure(mailbox, ack_ttl_enabled=True, ack_ttl_seconds=1, ack_ttl_scan_interval_seconds=0.2,
              ack_escalation_enabled=True, ack_escalation_mode="message")
    crew = {name: Agent(mailbox, name) for name in ("BlueLake", "GreenCastle", "RedFox", "SwiftOtter", "TidyTide")}
    yield crew
    for agent in crew.values():
        agent.conn.close()


def test_message_mode_reminds_each_recipient_and_tells_the_sender_once_even_across_a_restart(
    mailbox: Mailbox, agents: dict[str, Agent]
) -> None:
    blue = agents["BlueLake"]
    owed = blue.send(to=["GreenCastle", "SwiftOtter"], cc=["TidyTide"], bcc=["RedFox"], subject="Deploy plan",
                     ack_required=True)
    blue.send(to=["GreenCastle"], subject="No ack needed")
    agents["SwiftOtter"].call("acknowledge_message", message_id=owed["id"])
    agents["TidyTide"].call("set_contact_policy", policy="block_all")  # it takes no reminder either

    report = wait_for_scans(mailbox, 1, handled=3)
    assert report["handled"] == {"message": 2, "skipped": 1}
    reminders = mail_from(mailbox, "AckWatch")
    assert reminders == [
        ("GreenCastle", "to", "Reminder: please acknowledge: Deploy plan"),
        ("RedFox", "bcc", "Reminder: please acknowledge: Deploy plan"),  # a bcc recipient stays private
        ("BlueLake", "bcc", "Not yet acknowledged: Deploy plan"),  # it names RedFox: private too
    ]
    inbox = agents["GreenCastle"].call("fetch_inbox", include_bodies=True)["result"]
    reminder = inbox[0]
    assert reminder["from"] == "AckWatch"
    assert reminder["thread_id"] == str(owed["id"])
    assert f"message_id={owed['id']}" in reminder["body_md"]
    assert reminder["ack_required"] is False, "a reminder never asks for an ack itself (no escalation loop)"
    notice = blue.call("fetch_inbox", include_bodies=True)["result"][0]
    assert "still pending from: GreenCastle, RedFox, TidyTide" in notice["body_md"]
    assert "AckWatch reminded GreenCastle, RedFox once" in notice["body_md"]
    assert "Not reminded (they refuse AckWatch's mail): TidyTide" in notice["body_md"]
    assert db_rows(mailbox, "SELECT a.name, e.action FROM ack_escalations e JOIN agents a ON a.id = e.agent_id"
                   " ORDER BY a.name") == [("GreenCastle", "message"), ("RedFox", "message"), ("TidyTide", "skipped")]
    assert db_rows(mailbox, "SELECT program FROM agents WHERE name = 'AckWatch'") == [("ops",)]
    def owed_as_seen_by(name: str) -> list[str]:
        seen = agents[name].conn.read_resource("resource://views/acks/work-acks?state=overdue")
        return [a["recipient"] for a in seen["acks"]]

    assert owed_as_seen_by("BlueLake") == ["GreenCastle", "RedFox", "TidyTide"], "the sender sees its bcc"
    assert owed_as_seen_by("GreenCastle") == ["GreenCastle", "TidyTide"], "another recipient does not"
    assert owed_as_seen_by("RedFox") == ["GreenCastle", "RedFox", "TidyTide"], "the bcc recipient sees itself"
    lines = overdue_log_lines(mailbox)
    assert len(lines) == 3
    assert all(f"message={owed['id']}" in line for line in lines)
    assert sum("action=message" in line for line in lines) == 2

    for agent in agents.values():
        agent.conn.close()
    mailbox.stop()
    before = wait_for_scans(mailbox, 3)  # a new daemon, scanning every 0.2 s
    assert before["handled"] == {}, "nothing left to handle after the restart"
    assert mail_from(mailbox, "AckWatch") == reminders
    assert overdue_log_lines(mailbox) == lines
    assert db_rows(mailbox, "SELECT count(*) FROM ack_escalations") == [(3,)]
    wait_drained(mailbox)
    archived = db_rows(mailbox, "SELECT count(*) FROM archive_outbox")
    assert archived == [(0,)], "reminders archive like any mail"


@pytest.fixture(scope="module")
def claim_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailbox]:
    box = Mailbox(git_init(tmp_path_factory.mktemp("claims") / "repo"), "trio")
    configure(box, ack_ttl_enabled=True, ack_ttl_seconds=1, ack_ttl_scan_interval_seconds=0.2,
              ack_escalation_enabled=True, ack_escalation_mode="file_reservation",
              ack_escalation_claim_holder_name="OpsBot", ack_escalation_claim_ttl_seconds=600)
    try:
        yield box
    finally:
        box.stop()


def test_file_reservation_mode_leases_the_recipients_inbox_folder_to_the_claim_holder(claim_box: Mailbox) -> None:
    blue, green = Agent(claim_box, "AmberBay"), Agent(claim_box, "CobaltCove")
    try:
        owed = blue.send(to=["CobaltCove"], subject="Review", ack_required=True)
        wait_for_scans(claim_box, 1, handled=1)
        month = owed["created_ts"][:4] + "/" + owed["created_ts"][5:7]
        leases = db_rows(
            claim_box, "SELECT a.name, a.program, r.path_pattern, r.exclusive, r.reason FROM file_reservations r"
            " JOIN agents a ON a.id = r.agent_id")
        reason = f"ack overdue: message {owed['id']}"
        assert leases == [("OpsBot", "ops", f"agents/CobaltCove/inbox/{month}/*.md", 0, reason)]
        assert db_rows(claim_box, "SELECT action, detail FROM ack_escalations")[0][0] == "file_reservation"
        assert mail_from(claim_box, "AckWatch") == [], "file_reservation mode sends no mail"
        assert green.call("fetch_inbox")["unread_count"] == 1
    finally:
        blue.conn.close()
        green.conn.close()


def test_the_daemon_identity_cannot_be_registered_by_an_agent(claim_box: Mailbox) -> None:
    with claim_box.client(hello={"session": "s-x", "client": "test", "pid": 1}) as conn, pytest.raises(NameTaken):
        conn.call_tool("register_agent", {"project_key": PROJECT, "program": "p", "model": "m", "name": "ack-watch"})


def test_acks_stale_lists_what_is_overdue_with_its_age_read_time_and_escalation(claim_box: Mailbox) -> None:
    blue, green = Agent(claim_box, "OliveOwl"), Agent(claim_box, "PearlPine")
    try:
        owed = blue.send(to=["PearlPine"], subject="Stale one", ack_required=True)
        done = blue.send(to=["PearlPine"], subject="Acked one", ack_required=True)
        blue.send(to=["PearlPine"], subject="Plain")
        green.call("acknowledge_message", message_id=done["id"])
        green.call("mark_message_read", message_id=owed["id"])
        fresh = green.conn.read_resource("resource://views/acks-stale/PearlPine?ttl_seconds=3600")
        assert fresh["messages"] == [], "nothing is an hour old"
        deadline = time.monotonic() + 30
        while True:  # overdue after 1 s, escalated by the next scan
            stale = green.conn.read_resource("resource://views/acks-stale/PearlPine")
            if stale["messages"] and stale["messages"][0]["escalation"]:
                break
            assert time.monotonic() < deadline, stale
            time.sleep(0.05)
        [item] = stale["messages"]
        assert stale["ttl_seconds"] == 1
        assert item["id"] == owed["id"]
        assert item["read_at"] is not None
        assert item["age_seconds"] >= 1
        assert item["escalation"]["action"] == "file_reservation"
        with pytest.raises(MailError) as refused:
            blue.conn.read_resource("resource://views/acks-stale/PearlPine")
        assert refused.value.code == "AUTHENTICATION_REQUIRED", "another agent's pending acks need its token"
        token = green.info["registration_token"]
        assert blue.conn.read_resource(f"resource://views/acks-stale/PearlPine?agent_token={token}")["count"] == 1
        with pytest.raises(MailError) as bad:
            green.conn.read_resource("resource://views/acks-stale/PearlPine?ttl_seconds=soon")
        assert bad.value.code == "INVALID_ARGUMENT"
    finally:
        blue.conn.close()
        green.conn.close()


def test_mailbox_with_commits_names_the_archive_commit_holding_each_message(claim_box: Mailbox) -> None:
    blue, green = Agent(claim_box, "RubyRaven"), Agent(claim_box, "SageSwan")
    try:
        first = blue.send(to=["SageSwan"], subject="First archived")
        wait_drained(claim_box)
        second = blue.send(to=["SageSwan"], subject="Second archived")
        wait_drained(claim_box)
        box = green.conn.read_resource("resource://mailbox-with-commits/SageSwan")
        by_id = {m["id"]: m for m in box["messages"]}
        assert {by_id[first["id"]]["archive_status"], by_id[second["id"]]["archive_status"]} == {"committed"}
        commits = {i: by_id[i]["commit"]["hexsha"] for i in (first["id"], second["id"])}
        assert commits[first["id"]] != commits[second["id"]], "drained one at a time: two commits"
        for message_id, sha in commits.items():
            shown = subprocess.run(["git", "--git-dir", str(claim_box.paths.archive), "show", "--name-only",
                                    "--format=", sha], capture_output=True, text=True, check=True).stdout
            assert re.search(rf"^projects/work-acks/messages/.*__{message_id}\.md$", shown, re.MULTILINE), shown

        plain = green.conn.read_resource("resource://mailbox/SageSwan?limit=5")
        assert plain["archive_head"] == subprocess.run(
            ["git", "--git-dir", str(claim_box.paths.archive), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True).stdout.strip()
        assert all(m["archive_status"] == "committed" and "commit" not in m for m in plain["messages"])
        with pytest.raises(MailError) as refused:
            blue.conn.read_resource("resource://mailbox-with-commits/SageSwan")
        assert refused.value.code == "AUTHENTICATION_REQUIRED", "an inbox is personal"
    finally:
        blue.conn.close()
        green.conn.close()


def test_a_message_not_yet_archived_says_so_until_its_commit(claim_box: Mailbox) -> None:
    blue, green = Agent(claim_box, "TealTrail"), Agent(claim_box, "VividVale")
    wait_drained(claim_box)
    held = claim_box.paths.archive / "refs/heads/main.lock"
    held.write_text("another git process moves the branch\n")  # the archiver cannot commit meanwhile
    try:
        sent = blue.send(to=["VividVale"], subject="Not archived yet")
        [item] = green.conn.read_resource("resource://mailbox-with-commits/VividVale")["messages"]
        assert item["archive_status"] == "pending"
        assert item["commit"] is None
    finally:
        held.unlink()
    wait_drained(claim_box, timeout=60)
    [item] = green.conn.read_resource("resource://mailbox-with-commits/VividVale")["messages"]
    assert item["id"] == sent["id"]
    assert item["archive_status"] == "committed"
    assert len(item["commit"]["hexsha"]) == 40
    blue.conn.close()
    green.conn.close()


def test_mailctl_acks_lists_who_owes_what_for_a_person_and_for_a_script(claim_box: Mailbox) -> None:
    project = "/work/acks-cli"
    for name in ("JadeJay", "KeenKite"):
        claim_box.mailctl("register", "--program", "p", "--model", "m", "--name", name, "--project", project)
    sent = json.loads(claim_box.mailctl("send", "JadeJay,KeenKite", "Sign off the release", "body", "--ack",
                                        "--project", project, "--json").stdout)["deliveries"][0]["payload"]
    claim_box.mailctl("send", "JadeJay", "FYI only", "body", "--project", project)

    text = claim_box.mailctl("acks", "--project", project).stdout.splitlines()
    assert text[0] == "2 pending acknowledgement(s) in work-acks-cli"
    rows = [line.split() for line in text[1:3]]
    assert [row[0] for row in rows] == [f"#{sent['id']}"] * 2
    assert [row[5:7] for row in rows] == [["HumanOperator", "JadeJay"], ["HumanOperator", "KeenKite"]]  # after the age
    assert "FYI only" not in "\n".join(text)

    mine = json.loads(claim_box.mailctl("acks", "--agent", "KeenKite", "--project", project, "--json").stdout)
    assert [(a["message_id"], a["recipient"], a["from"]) for a in mine["acks"]] == [
        (sent["id"], "KeenKite", "HumanOperator")]
    assert mine["state"] == "pending"

    deadline = time.monotonic() + 30
    while True:  # the daemon's deadline is 1 s, and its scanner leases overdue inboxes (this module's mode)
        overdue = json.loads(claim_box.mailctl("acks", "overdue", "--project", project, "--json").stdout)
        if overdue["count"] == 2 and all(a["escalation"] for a in overdue["acks"]):
            break
        assert time.monotonic() < deadline, overdue
        time.sleep(0.1)
    assert all(a["overdue"] for a in overdue["acks"])
    assert "overdue, inbox leased" in claim_box.mailctl("acks", "overdue", "--project", project).stdout
    assert json.loads(claim_box.mailctl("acks", "overdue", "--ttl", "3600", "--project", project,
                                        "--json").stdout)["acks"] == []

    code, screen, _err = on_terminal(claim_box, "acks", "--project", project)
    assert code == 0
    assert "owed by" in screen
    assert "\x1b[" in screen, "a table with colour on a terminal"
    bad = claim_box.mailctl("acks", "--agent", "NoSuchAgent", "--project", project, check=False)
    assert bad.returncode == 1
    assert bad.stderr.startswith("mailctl: NOT_FOUND: ")


def test_mailctl_reserve_list_renew_and_release_as_text_and_json(claim_box: Mailbox) -> None:
    project = ["--project", "/work/leases-cli"]
    text = claim_box.mailctl("reserve", "src/auth/**", "docs/auth.md", "--ttl", "600", "--reason", "auth work",
                             *project).stdout.splitlines()
    assert len(text) == 2
    assert re.fullmatch(r"reserved #\d+ src/auth/\*\* \(exclusive\) until \d{4}-\d\d-\d\d \d\d:\d\d", text[0])
    first = int(text[0].split()[1][1:])

    shared = json.loads(claim_box.mailctl("reserve", "README.md", "--shared", *project, "--json").stdout)
    assert shared["granted"][0]["exclusive"] is False

    listing = claim_box.mailctl("reservations", *project).stdout.splitlines()
    assert listing[0] == "3 active reservation(s)"
    assert [line.split()[1:4] for line in listing[1:]] == [
        ["HumanOperator", "src/auth/**", "exclusive"], ["HumanOperator", "docs/auth.md", "exclusive"],
        ["HumanOperator", "README.md", "shared"]]

    other = Agent(claim_box, "LunarLynx")
    try:
        other.conn.call_tool("register_agent", {"project_key": "/work/leases-cli", "program": "p", "model": "m",
                                                "name": "LunarLynx"})
        refused = claim_box.mailctl("reserve", "src/auth/login.py", "--fail-on-conflict", "--as", "LunarLynx",
                                    f"--token={other.info['registration_token']}", *project, check=False)
    finally:
        other.conn.close()
    assert refused.returncode == 1
    assert "overlaps src/auth/** held exclusively by HumanOperator" in refused.stderr
    assert refused.stdout == ""

    renewed = json.loads(claim_box.mailctl("renew", "--ttl", "900", "docs/auth.md", *project, "--json").stdout)
    assert [r["path_pattern"] for r in renewed["file_reservations"]] == ["docs/auth.md"]
    assert renewed["file_reservations"][0]["new_expires_ts"] > renewed["file_reservations"][0]["old_expires_ts"]

    assert claim_box.mailctl("release", "--id", str(first), *project).stdout == "released 1 reservation(s)\n"
    assert json.loads(claim_box.mailctl("release", "README.md", *project, "--json").stdout)["released"] == 1
    everything = json.loads(claim_box.mailctl("reservations", "--all", *project, "--json").stdout)
    assert {(r["path_pattern"], r["released_ts"] is not None) for r in everything} == {
        ("src/auth/**", True), ("docs/auth.md", False), ("README.md", True)}
    assert "released" in claim_box.mailctl("reservations", "--all", *project).stdout
    usage = claim_box.mailctl("release", *project, check=False)
    assert usage.returncode == 2
    assert "--id N" in usage.stderr
