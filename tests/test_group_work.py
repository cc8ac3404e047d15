"""Agents working as a group (issue 14) against one real daemon per backend: project-wide reading,
bcc and inbox boundaries, broadcast, mentions, agent lifecycle, rebinding and contact policies.

One daemon serves the whole module (each test uses its own project and agent names), configured
with BROADCAST_MAX_RECIPIENTS=3 so the cap is reachable.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import apsw
import pytest

from maild.services.projects import slugify
from shared.errors import AuthenticationRequired, InvalidArgument, MailError, NameTaken, NotFound, RecipientNotFound
from tests.conftest import BACKENDS, Mailbox, git_init
from tests.test_archive import wait_drained
from tests.test_messaging import Agent


@pytest.fixture(scope="module", params=BACKENDS)
def box(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailbox]:
    mailbox = Mailbox(git_init(tmp_path_factory.mktemp("group") / "repo"), str(request.param))
    mailbox.paths.state_dir.mkdir(parents=True, exist_ok=True)
    (mailbox.paths.state_dir / "config.toml").write_text("broadcast_max_recipients = 3\n")
    try:
        yield mailbox
    finally:
        mailbox.stop()


class Team:
    """Agents registered in one project of the shared daemon; closed at the end of the test."""

    def __init__(self, box: Mailbox, project: str) -> None:
        self.box, self.project, self.agents = box, project, {}  # type: ignore[var-annotated]
        self.slug = slugify(project)

    def __getitem__(self, name: str) -> Agent:
        if name not in self.agents:
            self.agents[name] = Agent(self.box, name, project=self.project)
        return self.agents[name]  # type: ignore[no-any-return]

    def close(self) -> None:
        for agent in self.agents.values():
            agent.conn.close()


@pytest.fixture
def team(box: Mailbox, request: pytest.FixtureRequest) -> Iterator[Team]:
    crew = Team(box, f"/work/{request.node.name.split('[')[0][5:40]}")
    yield crew
    crew.close()


def code_of(exc: pytest.ExceptionInfo[MailError]) -> str:
    return exc.value.code


def test_a_late_joiner_reads_summarises_and_finds_a_thread_it_was_never_on(team: Team) -> None:
    blue, green = team["LateBlue"], team["LateGreen"]
    first = blue.send("LateGreen", subject="Auth rollout plan", body="- rotate tokens on Friday\n- [ ] tell ops",
                      thread_id="ROLL-1")
    green.conn.call_tool("reply_message", {"project_key": team.project, "message_id": first["id"],
                                           "body_md": "ok, kafka lag is the risk"})
    late = team["LateRed"]
    thread = late.resource("resource://thread/ROLL-1?include_bodies=true")
    assert [m["from"] for m in thread["messages"]] == ["LateBlue", "LateGreen"]
    assert late.resource(f"resource://message/{first['id']}")["body_md"].startswith("- rotate tokens")
    summary = late.call("summarize_thread", thread_id="ROLL-1")["summary"]
    assert summary["participants"] == ["LateBlue", "LateGreen"]
    assert summary["open_actions"] == 1
    found = late.call("search_messages", query="kafka")["result"]
    assert [m["thread_id"] for m in found] == ["ROLL-1"]
    assert late.call("search_mailbox", query="rotate tokens")["result"][0]["id"] == first["id"]
    prepared = late.call("macro_prepare_thread", thread_id="ROLL-1", program="codex", model="gpt",
                         agent_name="LateRed")
    assert prepared["thread"]["total_messages"] == 2
    # Joining: a reply into the thread from the late joiner, and reading marked nothing for anyone.
    late.conn.call_tool("reply_message", {"project_key": team.project, "message_id": first["id"], "body_md": "+1"})
    assert green.inbox()["unread_count"] == 1
    assert late.inbox()["unread_count"] == 0


def test_bcc_stays_hidden_from_everyone_else_in_every_read_path(team: Team) -> None:
    red, green, blue, grey = team["BccRed"], team["BccGreen"], team["BccBlue"], team["BccGrey"]
    open_mail = red.send("BccGreen", subject="zeppelin budget", bcc=["BccGrey"], thread_id="BCC-1")
    blind = red.send([], subject="zeppelin private", bcc=["BccGrey"], thread_id="BCC-1")
    for reader, bcc in ((blue, []), (green, []), (grey, ["BccGrey"]), (red, ["BccGrey"])):
        assert reader.resource(f"resource://message/{open_mail['id']}")["bcc"] == bcc
        thread = reader.resource("resource://thread/BCC-1")["messages"]
        assert thread[0]["bcc"] == bcc
        hits = reader.call("search_mailbox", query="zeppelin budget")["result"]
        assert [h["bcc"] for h in hits] == [bcc]
    # Mail sent only to blind copies is private to its sender and those recipients.
    for outsider in (blue, green):
        with pytest.raises(NotFound):
            outsider.resource(f"resource://message/{blind['id']}")
        assert [m["id"] for m in outsider.resource("resource://thread/BCC-1")["messages"]] == [open_mail["id"]]
        assert outsider.call("search_messages", query="private")["result"] == []
        assert outsider.call("summarize_thread", thread_id="BCC-1")["summary"]["total_messages"] == 1
    assert grey.resource(f"resource://message/{blind['id']}")["subject"] == "zeppelin private"
    assert red.call("summarize_thread", thread_id="BCC-1")["summary"]["total_messages"] == 2


def test_another_agents_inbox_and_other_projects_mail_stay_private(team: Team, box: Mailbox) -> None:
    blue, green, nosy = team["PrivBlue"], team["PrivGreen"], team["PrivNosy"]
    sent = blue.send("PrivGreen", subject="quasar inbox only")
    with pytest.raises(AuthenticationRequired):
        nosy.call("fetch_inbox", agent_name="PrivGreen")
    with pytest.raises(AuthenticationRequired):
        nosy.resource("resource://inbox/PrivGreen")
    with pytest.raises(AuthenticationRequired):
        nosy.resource("resource://outbox/PrivBlue")
    assert nosy.resource(f"resource://message/{sent['id']}")["subject"] == "quasar inbox only"
    stranger = Agent(box, "PrivStranger", project="/elsewhere/priv")
    try:
        with pytest.raises(NotFound):
            stranger.resource(f"resource://message/{sent['id']}")
        assert stranger.conn.call_tool("search_messages", {"project_key": team.project, "query": "quasar"})[
            "result"] == []
    finally:
        stranger.conn.close()
    assert green.inbox()["unread_count"] == 1


def test_broadcast_skips_the_sender_and_retired_agents_and_respects_the_cap(team: Team) -> None:
    sender = team["CastSender"]
    for name in ("CastA", "CastB", "CastC"):
        team[name]
    team["CastGone"].call("retire_agent")
    result = sender.conn.call_tool("send_message", {"project_key": team.project, "subject": "standup", "body_md": "hi",
                                                    "broadcast": True})
    assert result["truncated"] is False
    assert sorted(result["deliveries"][0]["payload"]["to"]) == ["CastA", "CastB", "CastC"]
    team["CastD"]
    capped = sender.conn.call_tool("send_message", {"project_key": team.project, "subject": "again", "body_md": "x",
                                                    "to": "all"})
    assert (capped["recipient_count"], capped["truncated"]) == (3, True)
    with pytest.raises(InvalidArgument, match="broadcast"):
        sender.call("send_message", to="CastA", subject="x", body_md="x", broadcast=True)
    with pytest.raises(InvalidArgument, match="only valid in `to`"):
        sender.send("CastA", cc=["all"])
    with pytest.raises(NameTaken, match="reserved"):
        sender.conn.call_tool("register_agent", {"project_key": team.project, "program": "p", "model": "m",
                                                 "name": "All", "rebind": True})
    assert "all" not in {a["name"].lower() for a in sender.resource(f"resource://agents/{team.slug}")["agents"]}


def test_mentions_reach_the_named_agent_once_and_are_not_deliveries(team: Team) -> None:
    blue, green, red = team["MentBlue"], team["MentGreen"], team["MentRed"]
    sent = blue.send("MentGreen", subject="review", body="@MentRed can you look? cc @mentred and @Nobody")
    blue.send("MentRed", subject="direct", body="@MentRed you are a recipient already")
    blue.send([], subject="blind", body="@MentRed secret", bcc=["MentGreen"])
    inbox = red.inbox()
    mentions = [m for m in inbox["result"] if m.get("source") == "mention"]
    assert [m["id"] for m in mentions] == [sent["id"]]
    assert [m["subject"] for m in inbox["result"]] == ["direct", "review"]
    assert inbox["unread_count"] == 1  # a mention is not a delivery
    assert [m["subject"] for m in red.inbox(unread_only=True)["result"]] == ["direct"]
    with pytest.raises(NotFound):
        red.call("mark_message_read", message_id=sent["id"])
    assert green.inbox()["unread_count"] == 2


def test_retiring_unretiring_and_deleting_an_agent(team: Team, box: Mailbox) -> None:
    blue, green = team["LifeBlue"], team["LifeGreen"]
    token = green.info["registration_token"]
    blue.send("LifeGreen", subject="before retirement")
    lease = green.call("file_reservation_paths", paths=["src/life/**"])["granted"][0]["id"]
    retired = green.call("retire_agent")
    assert (retired["status"], retired["released_reservations"]) == ("retired", 1)
    with pytest.raises(AuthenticationRequired, match="retired"):
        green.send("LifeBlue")
    with pytest.raises(RecipientNotFound, match="retired"):
        blue.send("LifeGreen")
    listing = {r["id"]: r for r in blue.resource(f"resource://file_reservations/{team.slug}")}
    assert listing[lease]["released_ts"] is not None
    agents = blue.resource(f"resource://agents/{team.slug}?include_retired=true")["agents"]
    assert {a["name"]: a["retired"] for a in agents} == {"LifeBlue": False, "LifeGreen": True}
    assert "LifeGreen" not in {a["name"] for a in blue.resource(f"resource://agents/{team.slug}")["agents"]}
    with pytest.raises(AuthenticationRequired):
        blue.call("unretire_agent", agent_name="LifeGreen")
    assert blue.call("unretire_agent", agent_name="LifeGreen", registration_token=token)["status"] == "active"
    assert box.call("fetch_inbox", project_key=team.project, agent_name="LifeGreen",
                    registration_token=token)["result"][0]["subject"] == "before retirement"
    # Deregistered: still there, but nobody can write to it.
    green2 = team["LifeRed"]
    green2.call("deregister_agent")
    with pytest.raises(MailError) as blocked:
        blue.send("LifeRed")
    assert code_of(blocked) == "CONTACT_BLOCKED"
    # Hard delete: confirmation required, then the agent and the mail it sent are gone.
    with pytest.raises(InvalidArgument, match="I UNDERSTAND"):
        blue.call("hard_delete_agent", agent_name="LifeBlue", confirmation="yes")
    gone = blue.call("hard_delete_agent", agent_name="LifeBlue", confirmation="I UNDERSTAND")
    assert gone["messages_deleted"] == 1
    with pytest.raises(NotFound):
        box.call("whois", project_key=team.project, agent_name="LifeBlue")


def test_a_retired_name_can_be_taken_and_then_cannot_be_unretired(team: Team, box: Mailbox) -> None:
    old = team["NameOld"]
    token = old.info["registration_token"]
    old.call("retire_agent")
    heir = box.client(hello={"session": "s-name-heir", "client": "test", "pid": 1})
    try:
        heir.call_tool("register_agent", {"project_key": team.project, "program": "p", "model": "m",
                                          "name": "NameOld"})
        with pytest.raises(NameTaken):
            heir.call_tool("unretire_agent", {"project_key": team.project, "agent_name": "NameOld",
                                              "registration_token": token})
    finally:
        heir.close()


def test_create_agent_identity_twice_retires_the_first_and_register_never_silently_rebinds(
    team: Team, box: Mailbox
) -> None:
    conn = box.client(hello={"session": "s-identity", "client": "test", "pid": 1})
    try:
        args = {"project_key": team.project, "program": "p", "model": "m"}
        conn.call_tool("ensure_project", {"human_key": team.project})
        first = conn.call_tool("create_agent_identity", {**args, "name_hint": "IdemFox"})
        second = conn.call_tool("create_agent_identity", {**args, "name_hint": "IdemFox"})
        assert (first["name"], second["name"]) == ("IdemFox", "IdemFox")
        assert first["id"] != second["id"]
        agents = conn.read_resource(f"resource://agents/{team.slug}?include_retired=true")["agents"]
        assert {a["id"]: a["retired"] for a in agents} == {first["id"]: True, second["id"]: False}
        # Bound to IdemFox now: registering another name is refused, with the current binding.
        with pytest.raises(MailError) as refused:
            conn.call_tool("register_agent", {**args, "name": "IdemOwl"})
        assert code_of(refused) == "ALREADY_BOUND"
        assert refused.value.data["current_agent"]["name"] == "IdemFox"
        assert conn.call_tool("register_agent", args)["name"] == "IdemFox"  # no name: its own agent
        owl = conn.call_tool("register_agent", {**args, "name": "IdemOwl", "rebind": True})
        sent = conn.call_tool("send_message", {"project_key": team.project, "to": "IdemFox", "subject": "s",
                                               "body_md": "b"})
        assert sent["deliveries"][0]["payload"]["from"] == owl["name"]
    finally:
        conn.close()


def test_contact_policies_requests_responses_and_blocks(team: Team) -> None:
    blue, green, red = team["PolBlue"], team["PolGreen"], team["PolRed"]
    green.call("set_contact_policy", policy="contacts_only")
    with pytest.raises(MailError) as required:
        blue.send("PolGreen")
    assert code_of(required) == "CONTACT_REQUIRED"
    assert "request_contact" in required.value.message
    with pytest.raises(MailError) as auto:
        blue.send("PolGreen", auto_contact_if_blocked=True)
    assert auto.value.data["contact_requested"] == ["PolGreen"]
    intro = green.inbox()["result"][0]
    assert intro["subject"] == "Contact request from PolBlue"
    green.call("respond_contact", from_agent="PolBlue", accept=True)
    blue.send("PolGreen", subject="now allowed")
    green.send("PolBlue", subject="both ways")
    red.call("request_contact", to_agent="PolGreen", reason="pairing")
    green.call("respond_contact", from_agent="PolRed", accept=False)
    with pytest.raises(MailError) as declined:
        red.send("PolGreen")
    assert code_of(declined) == "CONTACT_BLOCKED"
    links = {c["agent"]: c["status"] for c in green.call("list_contacts")["contacts"]}
    assert links == {"PolBlue": "approved", "PolRed": "blocked"}
    with pytest.raises(InvalidArgument):
        green.call("set_contact_policy", policy="maybe")
    green.call("set_contact_policy", policy="block_all")
    with pytest.raises(MailError) as all_blocked:
        blue.send("PolGreen")
    assert code_of(all_blocked) == "CONTACT_BLOCKED"


def test_no_message_is_delivered_after_a_block_commits(team: Team, box: Mailbox) -> None:
    target = team["RaceTarget"]
    senders = [team[f"RaceSender{i}"] for i in range(3)]
    started_after_block: list[bool] = []
    delivered: list[str] = []
    stop = threading.Event()
    blocked_at: list[float] = []
    refusals: list[str] = []

    def pound(agent: Agent) -> None:
        while not stop.is_set():
            begun = time.monotonic()
            try:
                agent.send("RaceTarget", subject="race")
            except MailError as exc:
                refusals.append(exc.code)
                continue
            delivered.append(agent.name)
            started_after_block.append(bool(blocked_at) and begun > blocked_at[0])

    threads = [threading.Thread(target=pound, args=(a,)) for a in senders]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(delivered) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    policy = target.call("set_contact_policy", policy="block_all")
    blocked_at.append(time.monotonic())
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join()
    assert not any(started_after_block), "a send that started after the block returned was delivered"
    assert refusals
    assert set(refusals) == {"CONTACT_BLOCKED"}
    inbox = box.call("fetch_inbox", project_key=team.project, agent_name="RaceTarget",
                     registration_token=target.info["registration_token"], limit=1000)["result"]
    assert len(inbox) == len(delivered)
    assert max(m["created_ts"] for m in inbox) <= policy["updated_ts"]


def test_topics_unread_only_and_guard_check_for_a_bound_session(team: Team) -> None:
    blue, green = team["TopBlue"], team["TopGreen"]
    tagged = blue.send("TopGreen", subject="migration step 1", topic="db-migration")
    blue.send("TopGreen", subject="lunch")
    with pytest.raises(InvalidArgument, match="topic"):
        blue.send("TopGreen", topic="no spaces allowed")
    assert [m["id"] for m in team["TopRed"].call("fetch_topic", topic="db-migration")["messages"]] == [tagged["id"]]
    assert [m["id"] for m in green.inbox(topic="db-migration")["result"]] == [tagged["id"]]
    green.call("mark_message_read", message_id=tagged["id"])
    assert [m["subject"] for m in green.inbox(unread_only=True)["result"]] == ["lunch"]
    green.call("file_reservation_paths", paths=["src/topic/**"])
    assert green.conn.call_tool("guard_check", {"paths": ["src/topic/a.py"]})["conflicts"] == []
    assert blue.conn.call_tool("guard_check", {"paths": ["src/topic/a.py"]})["conflicts"][0]["agent"] == "TopGreen"
    listing = blue.resource(f"resource://file_reservations/{team.slug}")
    assert listing[0]["stale"] is False
    assert "agent_recently_active" in listing[0]["active_reasons"]
    assert {"last_agent_activity_ts", "last_mail_activity_ts", "last_filesystem_activity_ts",
            "last_git_activity_ts", "stale_reasons"} <= set(listing[0])


def test_project_key_may_be_omitted_by_a_bound_session(team: Team) -> None:
    blue = team["OmitBlue"]
    team["OmitGreen"]
    sent = blue.conn.call_tool("send_message", {"to": "OmitGreen", "subject": "no key", "body_md": "b"})
    assert sent["deliveries"][0]["project"] == team.project
    assert blue.conn.call_tool("search_messages", {"query": "key"})["result"][0]["subject"] == "no key"


@pytest.mark.slow
def test_doctor_rebuild_restores_retired_agents_contacts_policies_topics_and_mentions(mailbox: Mailbox) -> None:
    project = "/work/rebuild"
    a, b, c, d, e = (Agent(mailbox, name, project=project) for name in ("RbA", "RbB", "RbC", "RbD", "RbE"))
    b.call("set_contact_policy", policy="contacts_only")
    a.call("request_contact", to_agent="RbB", reason="pairing")
    b.call("respond_contact", from_agent="RbA", accept=True)
    tagged = a.send("RbB", subject="tagged", body="@RbD have a look", topic="rb-topic")
    c.call("retire_agent")
    e.send("RbD", subject="from the deleted one")
    e.call("hard_delete_agent", agent_name="RbE", confirmation="I UNDERSTAND")
    wait_drained(mailbox)
    for agent in (a, b, c, d, e):
        agent.conn.close()
    mailbox.stop()
    mailbox.mailctl("doctor", "--rebuild", "--yes")
    agents = mailbox.call("fetch_topic", project_key=project, topic="rb-topic")["messages"]
    assert [m["id"] for m in agents] == [tagged["id"]]
    listing = {x["name"]: x for x in json.loads(mailbox.mailctl("agents", "--all", "--json", "--project",
                                                                  project).stdout)["agents"]}
    assert set(listing) == {"RbA", "RbB", "RbC", "RbD"}, "the hard-deleted agent stays deleted"
    assert listing["RbC"]["retired"] is True
    assert listing["RbB"]["contact_policy"] == "contacts_only"
    # Tokens do not survive a rebuild here (agents re-register), so read the restored rows directly.
    db = apsw.Connection(str(mailbox.paths.db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        ids = {name: agent_id for agent_id, name in db.execute("SELECT id, name FROM agents")}
        assert db.execute("SELECT from_agent_id, to_agent_id, status FROM contacts").fetchall() == [
            (ids["RbA"], ids["RbB"], "approved")]
        mentions = db.execute("SELECT agent_id, message_id FROM message_mentions").fetchall()
        assert mentions == [(ids["RbD"], tagged["id"])]
        subjects = [row[0] for row in db.execute(
            "SELECT m.subject FROM message_recipients r JOIN messages m ON m.id = r.message_id WHERE r.agent_id = ?"
            " ORDER BY m.id", (ids["RbB"],))]
        assert subjects == ["Contact request from RbA", "tagged"]
    finally:
        db.close()


def test_mailctl_agents_lists_retires_unretires_and_register_warns_before_revoking(mailbox: Mailbox) -> None:
    def cli(*args: str, check: bool = True) -> Any:
        return mailbox.mailctl(*args, "--project", "/work/cli-agents", check=check)

    cli("register", "--program", "codex", "--model", "gpt", "--name", "CliFox")
    refused = cli("register", "--program", "codex", "--model", "gpt", "--name", "CliFox", check=False)
    assert refused.returncode == 1
    assert "revokes its registration token" in refused.stderr
    assert "--force" in refused.stderr
    table = cli("agents").stdout
    assert table.splitlines()[0].startswith("project ")
    assert re.search(r"^CliFox\s+codex\s+gpt\s.*\bactive$", table, flags=re.MULTILINE)
    assert cli("agents", "retire", "CliFox").stdout.strip() == "retired CliFox"
    assert "CliFox" not in cli("agents").stdout
    assert "retired" in cli("agents", "--all").stdout
    assert cli("agents", "unretire", "CliFox").stdout.strip() == "unretired CliFox"
    forced = json.loads(cli("register", "--program", "codex", "--model", "gpt", "--name", "CliFox", "--force",
                            "--json").stdout)
    assert forced["created"] is True


@pytest.mark.anyio
async def test_through_the_shim_a_late_joiner_catches_up_without_passing_project_key(mailbox: Mailbox) -> None:
    from mcp import Client

    from tests.test_shim import shim_params, structured

    first = Agent(mailbox, "ShimBlue", project=str(mailbox.root))
    Agent(mailbox, "ShimGreen", project=str(mailbox.root)).conn.close()
    first.send("ShimGreen", subject="design review", body="- split the parser", thread_id="DR-1")
    first.conn.close()
    async with Client(shim_params(mailbox, "--tools", "extended"), mode="legacy") as client:  # type: ignore[arg-type]
        me = structured(await client.call_tool("register_agent", {"program": "claude-code", "model": "opus",
                                                                  "name": "ShimLate"}))
        assert me["name"] == "ShimLate"
        summary = structured(await client.call_tool("summarize_thread", {"thread_id": "DR-1"}))["summary"]
        assert summary["participants"] == ["ShimBlue"]
        found = structured(await client.call_tool("search_messages", {"query": "parser"}))
        assert [hit["thread_id"] for hit in found["result"]] == ["DR-1"]
        thread = await client.read_resource("resource://thread/DR-1")
        assert json.loads(thread.contents[0].text)["count"] == 1  # type: ignore[union-attr]
        refused = await client.call_tool("fetch_inbox", {"agent_name": "ShimGreen"})
        assert refused.is_error
