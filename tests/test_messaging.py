"""Mail between real agents over the real daemon: flows, filters, errors, privacy, resources.

One daemon per backend serves the module (`shared_mailbox`); each test works in its own project, so
its agents, mail, threads and slugs are its own. Only the test that needs a setting at start gets a
fresh daemon (`mailbox`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from shared.client import DaemonClient
from shared.errors import AuthenticationRequired, InvalidArgument, NameTaken, NotFound, RecipientNotFound
from tests.conftest import Mailbox

PROJECT = "/work/app"


@pytest.fixture
def project(tag: str) -> str:
    """This test's project on the shared daemon (slug work-app-tN)."""
    return f"{PROJECT}-{tag}"


class Agent:
    def __init__(self, mailbox: Mailbox, name: str, project: str) -> None:
        self.conn = mailbox.client(hello={"session": f"s-{name}@{project}", "client": "test", "pid": 1})
        self.project = project
        self.info = self.conn.call_tool(
            "register_agent", {"project_key": project, "program": "claude-code", "model": "opus", "name": name}
        )
        self.name = self.info["name"]

    def send(self, to: Any, subject: str = "hello", body: str = "body", **extra: Any) -> dict[str, Any]:
        args = {"project_key": self.project, "to": to, "subject": subject, "body_md": body, **extra}
        return self.conn.call_tool("send_message", args)["deliveries"][0]["payload"]  # type: ignore[no-any-return]

    def inbox(self, **extra: Any) -> dict[str, Any]:
        return self.conn.call_tool("fetch_inbox", {"project_key": self.project, **extra})  # type: ignore[no-any-return]

    def call(self, tool: str, **args: Any) -> Any:
        return self.conn.call_tool(tool, {"project_key": self.project, **args})

    def resource(self, uri: str) -> Any:
        return self.conn.read_resource(uri)


@pytest.fixture
def pair(shared_mailbox: Mailbox, project: str) -> Iterator[tuple[Agent, Agent]]:
    a, b = Agent(shared_mailbox, "BlueLake", project), Agent(shared_mailbox, "GreenCastle", project)
    yield a, b
    a.conn.close()
    b.conn.close()


def test_two_agents_exchange_mail_reply_read_and_acknowledge(pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    sent = a.send("green-castle", subject="Plan for auth", body="Take `src/auth.py`?", ack_required=True,
                  importance="high")
    assert sent["to"] == ["GreenCastle"]
    inbox = b.inbox(include_bodies=True)
    assert inbox["unread_count"] == 1
    [item] = inbox["result"]
    assert item["from"] == "BlueLake"
    assert item["kind"] == "to"
    assert item["body_md"] == "Take `src/auth.py`?"
    assert b.inbox()["unread_count"] == 1, "fetching never marks mail read"
    assert "body_md" not in b.inbox()["result"][0]

    reply = b.call("reply_message", message_id=sent["id"], body_md="Yes, taking it.")
    assert reply["subject"] == "Re: Plan for auth"
    assert reply["thread_id"] == str(sent["id"])
    assert reply["to"] == ["BlueLake"]
    assert reply["importance"] == "high"
    assert reply["ack_required"] is True
    again = a.call("reply_message", message_id=reply["id"], body_md="Thanks")
    assert again["subject"] == "Re: Plan for auth", "no Re: Re:"
    assert again["thread_id"] == str(sent["id"])

    read = b.call("mark_message_read", message_id=sent["id"])
    assert read["read"] is True
    assert b.call("mark_message_read", message_id=sent["id"])["read_at"] == read["read_at"]
    assert b.inbox()["unread_count"] == 1, "only BlueLake's second reply is still unread"
    ack = b.call("acknowledge_message", message_id=sent["id"])
    assert ack["acknowledged"] is True
    assert ack["read_at"] == read["read_at"]
    assert b.call("acknowledge_message", message_id=sent["id"]) == ack

    thread = a.resource(f"resource://thread/{sent['id']}?include_bodies=true")
    assert [m["subject"] for m in thread["messages"]] == ["Plan for auth", "Re: Plan for auth", "Re: Plan for auth"]


def test_inbox_filters_limit_urgent_and_since(pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    ids = [a.send("GreenCastle", subject=f"m{i}", importance=imp)["id"]
           for i, imp in enumerate(["low", "normal", "high", "urgent", "normal"])]
    newest_first = [m["id"] for m in b.inbox()["result"]]
    assert newest_first == list(reversed(ids))
    assert [m["id"] for m in b.inbox(limit=2)["result"]] == [ids[4], ids[3]]
    assert [m["id"] for m in b.inbox(urgent_only=True)["result"]] == [ids[3], ids[2]]
    pivot = b.inbox()["result"][2]["created_ts"]
    assert [m["id"] for m in b.inbox(since_ts=pivot)["result"]] == [ids[4], ids[3]], "strictly after"
    with pytest.raises(InvalidArgument, match="ISO-8601"):
        b.inbox(since_ts="yesterday")


def test_to_cc_bcc_accept_strings_or_lists_and_bcc_stays_private(
    shared_mailbox: Mailbox, project: str, pair: tuple[Agent, Agent]
) -> None:
    a, b = pair
    c = Agent(shared_mailbox, "RedFox", project)
    sent = a.send(["GreenCastle"], cc="RedFox", bcc=["BlueLake"])
    assert (sent["to"], sent["cc"], sent["bcc"]) == (["GreenCastle"], ["RedFox"], ["BlueLake"])
    assert c.inbox()["result"][0]["kind"] == "cc"
    seen_by_b = b.resource(f"resource://message/{sent['id']}")
    assert seen_by_b["bcc"] == []
    assert a.resource(f"resource://message/{sent['id']}")["bcc"] == ["BlueLake"]
    c.conn.close()


def test_unknown_recipients_fail_with_suggestions_and_deliver_nothing(pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    with pytest.raises(RecipientNotFound) as caught:
        a.send(["GreenCastle", "Ghost-Writer"])
    assert caught.value.data["unknown_recipients"] == ["Ghost-Writer"]
    call = caught.value.data["suggested_tool_calls"][0]
    assert call["tool"] == "register_agent"
    assert call["arguments"]["name"] == "GhostWriter"
    assert b.inbox()["result"] == []


def test_auto_registered_recipients_get_the_first_message(mailbox: Mailbox) -> None:
    mailbox.paths.state_dir.mkdir(mode=0o700)
    mailbox.paths.config_file.write_text("auto_register_recipients = true\n")
    a = Agent(mailbox, "BlueLake", PROJECT)
    sent = a.send("NewHire", subject="Welcome", body="Start with the README.")
    assert sent["to"] == ["NewHire"]
    with mailbox.client() as anonymous:
        placeholder = anonymous.call_tool("whois", {"project_key": PROJECT, "agent_name": "NewHire"})
        assert placeholder["placeholder"] is True
    with mailbox.client(hello={"session": "s-NewHire", "client": "test", "pid": 1}) as conn:
        joined = conn.call_tool("register_agent", {
            "project_key": PROJECT, "program": "codex", "model": "gpt-5", "name": "new-hire",
            "auto_fetch_inbox": True, "inbox_include_bodies": True,
        })
        me = joined["agent"]
        assert me["id"] == placeholder["id"], "the newcomer claims the placeholder, not a fresh identity"
        assert me["created"] is True
        assert me["placeholder"] is False
        assert len(me["registration_token"]) >= 24
        assert [(m["id"], m["body_md"]) for m in joined["inbox"]] == [(sent["id"], "Start with the README.")]
        assert joined["unread_count"] == 1
        assert conn.call_tool("fetch_inbox", {"project_key": PROJECT})["result"][0]["subject"] == "Welcome"
        with mailbox.client() as anonymous:
            whois = anonymous.call_tool("whois", {"project_key": PROJECT, "agent_name": "NewHire"})
            assert (whois["program"], whois["model"]) == ("codex", "gpt-5")
        with mailbox.client(hello={"session": "s-late", "client": "test", "pid": 1}) as late, pytest.raises(
            NameTaken, match="online"
        ):
            late.call_tool("register_agent", {"project_key": PROJECT, "program": "p", "model": "m",
                                              "name": "NewHire"})
    a.conn.close()


def test_register_can_fetch_the_inbox_with_its_filters(project: str, pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    first = a.send("GreenCastle", subject="old", importance="urgent")
    a.send("GreenCastle", subject="calm")
    newer = a.send("GreenCastle", subject="new", importance="high", body="look")
    a.send("GreenCastle", subject="newest", importance="urgent")

    def register(**options: Any) -> dict[str, Any]:
        return b.conn.call_tool("register_agent", {  # type: ignore[no-any-return]
            "project_key": project, "program": "claude-code", "model": "opus", "name": "GreenCastle",
            "auto_fetch_inbox": True, **options,
        })

    everything = register()
    assert everything["agent"]["name"] == "GreenCastle"
    assert [m["subject"] for m in everything["inbox"]] == ["newest", "new", "calm", "old"]
    assert "body_md" not in everything["inbox"][0]
    assert everything["unread_count"] == 4
    filtered = register(inbox_limit=2, inbox_urgent_only=True, inbox_since_ts=first["created_ts"],
                        inbox_include_bodies=True)
    assert [m["subject"] for m in filtered["inbox"]] == ["newest", "new"]
    assert filtered["inbox"][1]["body_md"] == "look"
    assert [m["id"] for m in register(inbox_limit=1, inbox_since_ts=newer["created_ts"])["inbox"]] == [
        newer["id"] + 1
    ]
    assert "inbox" not in register(auto_fetch_inbox=False), "without the option: the agent alone"


def test_cross_project_addressing(shared_mailbox: Mailbox, project: str, tag: str) -> None:
    a = Agent(shared_mailbox, "BlueLake", project)
    other = Agent(shared_mailbox, "OliveOwl", project=f"/work/other-{tag}")
    a.send(f"OliveOwl@work-other-{tag}")
    a.send(f"project:/work/other-{tag}#OliveOwl")
    assert len(other.inbox(project_key=f"/work/other-{tag}")["result"]) == 2
    with pytest.raises(RecipientNotFound):
        a.send(f"OliveOwl@work-app-{tag}")
    a.conn.close()
    other.conn.close()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"subject": ""}, "subject must not be empty"),
        ({"subject": "s" * 513}, "at most 512"),
        ({"importance": "critical"}, "importance must be one of"),
        ({"thread_id": "../etc"}, "thread_id"),
        ({"thread_id": "x" * 129}, "thread_id"),
        ({"to": []}, "at least one recipient"),
        ({"to": [1, 2]}, "to"),
        ({"body_md": "x" * (1024 * 1024 + 1)}, "limit is 1048576"),
        ({"attachment_paths": ["/etc/passwd"]}, "is an absolute path"),
    ],
)
def test_send_validates_every_argument(pair: tuple[Agent, Agent], extra: dict[str, Any], needle: str) -> None:
    a, b = pair
    args = {"to": "GreenCastle", "subject": "ok", "body": "ok"}
    extra = dict(extra)  # parametrised values are shared between the two backends' runs
    if "body_md" in extra:
        args["body"] = extra.pop("body_md")
    with pytest.raises(InvalidArgument, match=needle):
        a.send(**{**args, **extra})
    assert b.inbox()["result"] == []


def test_unicode_and_metacharacters_round_trip(pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    body = "日本語 ✓ émoji 🚀 '; DROP TABLE messages; -- \"quoted\" * NEAR(a b) <script>"
    sent = a.send("GreenCastle", subject="Ünïcode ✓ 'quotes'", body=body)
    assert b.resource(f"resource://message/{sent['id']}")["body_md"] == body


def test_spoofing_a_sender_is_refused_but_its_token_works(
    shared_mailbox: Mailbox, project: str, pair: tuple[Agent, Agent]
) -> None:
    a, b = pair
    with pytest.raises(AuthenticationRequired, match="registration_token"):
        b.send("GreenCastle", sender_name="BlueLake", subject="I am BlueLake")
    with shared_mailbox.client() as anonymous:
        with pytest.raises(AuthenticationRequired):
            anonymous.call_tool("send_message", {"project_key": project, "sender_name": "BlueLake",
                                                 "to": "GreenCastle", "subject": "x", "body_md": "x"})
        forwarded = anonymous.call_tool(
            "send_message",
            {"project_key": project, "sender_name": "BlueLake", "sender_token": a.info["registration_token"],
             "to": "GreenCastle", "subject": "with token", "body_md": "x"},
        )
        assert forwarded["deliveries"][0]["payload"]["from"] == "BlueLake"
    assert [m["subject"] for m in b.inbox()["result"]] == ["with token"]


def test_read_and_ack_only_for_recipients_and_unknown_ids(pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    sent = a.send("GreenCastle")
    with pytest.raises(NotFound, match="not a recipient"):
        a.call("mark_message_read", message_id=sent["id"])
    with pytest.raises(NotFound):
        b.call("acknowledge_message", message_id=999999)
    with pytest.raises(NotFound):
        a.resource("resource://message/999999")


def test_views_list_urgent_unread_and_pending_acks(project: str, pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    urgent = a.send("GreenCastle", importance="urgent")
    needs_ack = a.send("GreenCastle", ack_required=True)
    a.send("GreenCastle")
    assert [m["id"] for m in b.resource("resource://views/urgent-unread/GreenCastle")["messages"]] == [urgent["id"]]
    assert [m["id"] for m in b.resource("resource://views/ack-required/GreenCastle")["messages"]] == [needs_ack["id"]]
    assert b.resource("resource://views/ack-overdue/GreenCastle")["messages"] == []
    overdue = b.resource("resource://views/ack-overdue/GreenCastle?ttl_minutes=0")["messages"]
    assert [m["id"] for m in overdue] == [needs_ack["id"]]
    outbox = a.resource("resource://outbox/BlueLake?limit=2")
    assert outbox["count"] == 2
    assert outbox["messages"][0]["to"] == ["GreenCastle"]
    inbox = b.resource(f"resource://inbox/GreenCastle?project={project}")
    assert inbox["unread_count"] == 3
    with pytest.raises(AuthenticationRequired):
        a.resource("resource://inbox/GreenCastle")
    with pytest.raises(InvalidArgument, match="unknown parameter"):
        b.resource("resource://inbox/GreenCastle?colour=red")


def test_agents_projects_and_project_resources(tag: str, pair: tuple[Agent, Agent]) -> None:
    a, _b = pair
    slug = f"work-app-{tag}"
    a.send("GreenCastle")
    listing = a.resource(f"resource://agents/{slug}")
    by_name = {agent["name"]: agent for agent in listing["agents"]}
    assert by_name["GreenCastle"]["unread_count"] == 1
    assert by_name["BlueLake"]["online"] is True
    assert "token_hash" not in str(listing)
    assert slug in [p["slug"] for p in a.resource("resource://projects")["projects"]]
    assert {x["name"] for x in a.resource(f"resource://project/{slug}")["agents"]} == {"BlueLake", "GreenCastle"}


def test_a_third_agent_cannot_read_a_thread_it_is_not_part_of_in_another_project(
    shared_mailbox: Mailbox, tag: str, pair: tuple[Agent, Agent]
) -> None:
    a, _b = pair
    sent = a.send("GreenCastle", thread_id="FEAT-1")
    outsider = Agent(shared_mailbox, "NosyParker", project=f"elsewhere-{tag}")
    assert outsider.resource("resource://thread/FEAT-1")["messages"] == []
    with pytest.raises(NotFound):
        outsider.resource(f"resource://message/{sent['id']}")
    outsider.conn.close()


def test_a_vanished_connection_closes_nothing_else(shared_mailbox: Mailbox, project: str) -> None:
    a = Agent(shared_mailbox, "BlueLake", project)
    a.conn.close()
    with DaemonClient(shared_mailbox.paths) as conn:
        assert conn.call_tool("health_check")["status"] == "ok"


def test_the_cli_sends_replies_filters_and_creates_identities(shared_mailbox: Mailbox, project: str) -> None:
    mailbox = shared_mailbox

    def cli(*args: str) -> Any:
        return json.loads(mailbox.mailctl(*args, "--project", project, "--json").stdout)

    tokens = {name: cli("register", "--program", "codex", "--model", "gpt", "--name", name)["registration_token"]
              for name in ("BlueLake", "GreenCastle", "RedFox")}
    sent = cli("send", "blue-lake", "Plan", "Take auth?", "--cc", "GreenCastle", "--bcc", "RedFox", "--thread",
               "FEAT-1", "--ack", "--importance", "urgent")["deliveries"][0]["payload"]
    assert (sent["from"], sent["to"], sent["cc"], sent["bcc"]) == ("HumanOperator", ["BlueLake"], ["GreenCastle"],
                                                                   ["RedFox"])
    assert (sent["thread_id"], sent["ack_required"], sent["importance"]) == ("FEAT-1", True, "urgent")
    cli("send", "BlueLake", "Later", "not urgent")

    reply = cli("reply", str(sent["id"]), "Taking it.", "--as", "BlueLake", f"--token={tokens['BlueLake']}",
                "--cc", "RedFox")
    assert (reply["from"], reply["to"], reply["cc"]) == ("BlueLake", ["HumanOperator"], ["RedFox"])
    assert (reply["subject"], reply["thread_id"], reply["importance"], reply["ack_required"]) == (
        "Re: Plan", "FEAT-1", "urgent", True)
    redirected = cli("reply", str(reply["id"]), "FYI", "--to", "GreenCastle")
    assert (redirected["from"], redirected["to"], redirected["subject"]) == ("HumanOperator", ["GreenCastle"],
                                                                              "Re: Plan")

    inbox = cli("inbox", "--as", "BlueLake", f"--token={tokens['BlueLake']}")
    assert [m["subject"] for m in inbox["result"]] == ["Later", "Plan"]
    urgent = cli("inbox", "--as", "BlueLake", f"--token={tokens['BlueLake']}", "--urgent", "--limit", "5")
    assert [m["id"] for m in urgent["result"]] == [sent["id"]]
    newer = cli("inbox", "--as", "BlueLake", f"--token={tokens['BlueLake']}", "--since", sent["created_ts"],
                "--limit", "1")
    assert [m["subject"] for m in newer["result"]] == ["Later"]
    text = mailbox.mailctl("inbox", "--as", "GreenCastle", f"--token={tokens['GreenCastle']}", "--project", project)
    assert text.stdout.startswith("GreenCastle: 2 unread")

    created = cli("identity", "new", "--program", "codex", "--model", "gpt", "--name-hint", "Scout")
    assert created["name"] == "Scout"
    assert len(created["registration_token"]) >= 24
    again = cli("identity", "new", "--program", "codex", "--model", "gpt")
    assert again["id"] != created["id"]
    assert mailbox.mailctl("identity", "new", "--help").stdout.count("example: mailctl identity new") == 1
