"""register_agent / create_agent_identity / whois through the real daemon, and who may act as whom."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError

from maild.services import names
from shared.client import DaemonClient
from shared.errors import AuthenticationRequired, InvalidArgument, NameTaken, NotFound
from shared.slugs import slugify
from tests.conftest import Mailbox, ProjectBox

PROJECT = "/work/app"


@pytest.fixture
def project(tag: str) -> str:
    """This test's project (a label), so tests on the shared daemon never meet each other's agents."""
    return f"{PROJECT}-{tag}"


@pytest.fixture
def mailbox(project_box: ProjectBox) -> ProjectBox:
    """A daemon the module shares (one per backend), with session ids unique to the test. Tests that
    write settings before the start, restart the daemon, or name agents in a hello (which binds
    daemon-wide by name) take `fresh_mailbox`."""
    return project_box


def agent_session(mailbox: Mailbox, session: str) -> DaemonClient:
    return mailbox.client(hello={"session": mailbox.session(session), "client": "test", "pid": 1})


def register(conn: DaemonClient, project: str, **extra: Any) -> dict[str, Any]:
    args = {"project_key": project, "program": "claude-code", "model": "opus", **extra}
    result: dict[str, Any] = conn.call_tool("register_agent", args)
    return result


def test_the_word_list_gives_thousands_of_memorable_names() -> None:
    assert names.COMBINATIONS >= 10_000
    assert names.sanitize("Blue_Lake-42!") == "BlueLake42"
    assert names.lookup_key("blue-lake") == "bluelake"


def test_register_generates_a_name_returns_a_token_once_and_binds_the_session(mailbox: Mailbox, project: str) -> None:
    with agent_session(mailbox, "s1") as conn:
        agent = register(conn, project)
        assert agent["created"] is True
        assert agent["name"][0].isupper()
        assert len(agent["registration_token"]) >= 24
        again = register(conn, project, name=agent["name"], task_description="now reviewing")
        assert again["id"] == agent["id"]
        assert "registration_token" not in again
        assert again["task_description"] == "now reviewing"
        inbox = conn.call_tool("fetch_inbox", {"project_key": project})
        assert inbox["agent"] == agent["name"], "the session acts as its registered agent by default"


def test_names_are_sanitised_and_unique_case_insensitively(mailbox: Mailbox, project: str) -> None:
    with agent_session(mailbox, "a") as a, agent_session(mailbox, "b") as b:
        assert register(a, project, name="Green_Castle")["name"] == "GreenCastle"
        with pytest.raises(NameTaken, match="online"):
            register(b, project, name="greencastle")


def test_strict_mode_refuses_a_taken_name_even_offline(fresh_mailbox: Mailbox, project: str) -> None:
    mailbox = fresh_mailbox
    mailbox.paths.state_dir.mkdir(mode=0o700)
    mailbox.paths.config_file.write_text('name_enforcement_mode = "strict"\n')
    with agent_session(mailbox, "a") as a:
        register(a, project, name="RedStone")
    with agent_session(mailbox, "b") as b:
        with pytest.raises(NameTaken) as caught:
            register(b, project, name="redstone")
        assert caught.value.data["conflicting_agents"][0]["name"] == "RedStone"
        with pytest.raises(InvalidArgument, match="no letters or digits"):
            register(b, project, name="!!!")
        reclaimed = register(b, project, name="RedStone", force_reclaim=True)
        assert reclaimed["created"] is True


def test_coerce_mode_reclaims_an_offline_name_and_retires_the_old_holder(mailbox: Mailbox, project: str) -> None:
    with agent_session(mailbox, "old") as old:
        first = register(old, project, name="BlueLake")
    with agent_session(mailbox, "new") as new:
        second = register(new, project, name="blue-lake")
        assert second["name"] == "BlueLake"
        assert second["id"] != first["id"]
        assert register(new, project, name="BlueLake")["id"] == second["id"]


def test_always_auto_ignores_requested_names(fresh_mailbox: Mailbox, project: str) -> None:
    mailbox = fresh_mailbox
    mailbox.paths.state_dir.mkdir(mode=0o700)
    mailbox.paths.config_file.write_text('name_enforcement_mode = "always_auto"\n')
    with agent_session(mailbox, "a") as a:
        assert register(a, project, name="Zzz")["name"] != "Zzz"


def test_a_token_lets_a_new_session_re_register_the_same_identity(mailbox: Mailbox, project: str) -> None:
    with agent_session(mailbox, "first") as first:
        agent = register(first, project, name="SilverFox")
        with agent_session(mailbox, "second") as second:
            again = register(second, project, name="SilverFox", registration_token=agent["registration_token"])
            assert again["id"] == agent["id"]
        with agent_session(mailbox, "third") as third, pytest.raises(NameTaken, match="online"):
            register(third, project, name="SilverFox", registration_token="wrong")


def test_twenty_concurrent_registrations_of_one_name_have_exactly_one_winner_in_strict_mode(
    fresh_mailbox: Mailbox, project: str
) -> None:
    mailbox = fresh_mailbox
    mailbox.paths.state_dir.mkdir(mode=0o700)
    mailbox.paths.config_file.write_text('name_enforcement_mode = "strict"\n')
    mailbox.call("health_check")

    def attempt(i: int) -> str:
        with agent_session(mailbox, f"racer-{i}") as conn:
            try:
                register(conn, project, name="SwiftOtter")
            except NameTaken:
                return "taken"
            return "won"

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(attempt, range(20)))
    assert outcomes.count("won") == 1
    assert outcomes.count("taken") == 19


@pytest.mark.parametrize(
    ("extra", "error", "needle"),
    [
        ({"name": "x" * 129}, InvalidArgument, "at most 128"),
        ({"project_key": ""}, InvalidArgument, "project_key"),
        ({"program": "p" * 129}, InvalidArgument, "program"),
        ({"inbox_limit": 0}, InvalidArgument, "inbox_limit"),
        ({"colour": "blue"}, InvalidArgument, "colour"),
    ],
)
def test_register_validates_every_argument(
    mailbox: Mailbox, project: str, extra: dict[str, Any], error: type, needle: str
) -> None:
    with agent_session(mailbox, "v") as conn, pytest.raises(error, match=needle):
        register(conn, project, **extra)


def test_hostile_names_are_sanitised_not_used_as_paths(mailbox: Mailbox, project: str) -> None:
    with agent_session(mailbox, "h") as conn:
        agent = register(conn, project, name="../../etc/passwd")
        assert agent["name"] == "etcpasswd"
        unicode_name = register(conn, project, name="Ünïcødé", force_reclaim=True, rebind=True)  # a second identity
        assert unicode_name["name"] == "ncd"


def wait_archived(mailbox: Mailbox, timeout: float = 30) -> None:
    """Bounded poll until the archive has committed everything queued (it group-commits)."""
    deadline = time.monotonic() + timeout
    while True:
        report = mailbox.call("health_check")
        if report["archive"]["queue_depth"] == 0:
            return
        assert time.monotonic() < deadline, f"archive did not drain: {report['archive']}"
        time.sleep(0.02)


def test_whois_shows_presence_and_the_agents_recent_archive_commits(fresh_mailbox: Mailbox, project: str) -> None:
    mailbox = fresh_mailbox
    with agent_session(mailbox, "w1") as conn:
        agent = register(conn, project, name="AmberHawk")
        wait_archived(mailbox)  # its own commit, so the two agents' histories differ
    with agent_session(mailbox, "w2") as conn:
        register(conn, project, name="Bystander")
        wait_archived(mailbox)
    with mailbox.client() as anonymous:
        offline = anonymous.call_tool("whois", {"project_key": project, "agent_name": "amber-hawk"})
        assert offline["online"] is False
        assert offline["last_seen_ts"] is not None
        [commit] = offline["recent_commits"]
        assert re.fullmatch(r"[0-9a-f]{12}", commit["hexsha"])
        touched = subprocess.run(["git", "--git-dir", str(mailbox.paths.archive), "show", "--name-only",
                                  "--format=", commit["hexsha"]], capture_output=True, text=True, check=True).stdout
        assert f"projects/{slugify(project)}/agents/AmberHawk/profile.json" in touched.split()
        other = anonymous.call_tool("whois", {"project_key": project, "agent_name": "Bystander"})
        assert [c["hexsha"] for c in other["recent_commits"]] != [commit["hexsha"]]
        token = {"token": agent["registration_token"]}
        with mailbox.client(hello={"session": "shim-1", "agent": "AmberHawk", "client": "shim", **token}) as shim:
            assert shim.call_tool("fetch_inbox", {"project_key": project})["agent"] == "AmberHawk"
            online = anonymous.call_tool("whois", {"project_key": project, "agent_name": "AmberHawk"})
            assert online["online"] is True
        with pytest.raises(NotFound):
            anonymous.call_tool("whois", {"project_key": project, "agent_name": "Nobody"})


def wait_offline(mailbox: Mailbox, project: str, name: str, timeout: float = 30) -> None:
    """Bounded poll until the daemon has seen the agent's sessions close (closing is asynchronous)."""
    deadline = time.monotonic() + timeout
    while mailbox.call("whois", project_key=project, agent_name=name, include_recent_commits=False)["online"]:
        assert time.monotonic() < deadline, f"{name} still online"
        time.sleep(0.02)


def shim_hello(mailbox: Mailbox, session: str, agent: str, token: str | None = None) -> DaemonClient:
    hello = {"session": session, "client": "shim", "pid": 1, "agent": agent, **({"token": token} if token else {})}
    return mailbox.client(hello=hello)


def test_a_hello_naming_an_agent_without_its_token_does_not_take_it_over(fresh_mailbox: Mailbox, project: str) -> None:
    mailbox = fresh_mailbox
    with agent_session(mailbox, "lead") as lead:
        target = register(lead, project, name="TrustedLead")  # registered by name: it holds a token
        lead.call_tool("send_message", {"project_key": project, "to": "TrustedLead", "subject": "secret",
                                        "body_md": "x"})
        for session, token, needle in (("spoof-online", None, "online in another session"),
                                       ("spoof-wrong", "wrong", "not TrustedLead's")):
            with shim_hello(mailbox, session, "TrustedLead", token) as spoof:
                with pytest.raises(AuthenticationRequired, match=needle) as caught:
                    spoof.call_tool("fetch_inbox", {"project_key": project})
                assert "AGENT_MAIL_TOKEN" in caught.value.message
                with pytest.raises(AuthenticationRequired):
                    spoof.call_tool("send_message", {"project_key": project, "to": "TrustedLead", "subject": "x",
                                                     "body_md": "x"})
        with shim_hello(mailbox, "own-token", "TrustedLead", target["registration_token"]) as second:
            assert second.call_tool("fetch_inbox", {"project_key": project})["agent"] == "TrustedLead", (
                "its token binds a second session even while it is online"
            )
    wait_offline(mailbox, project, "TrustedLead")
    with shim_hello(mailbox, "spoof-offline", "TrustedLead") as spoof, pytest.raises(
        AuthenticationRequired, match="registered through register_agent"
    ):
        spoof.call_tool("fetch_inbox", {"project_key": project})


def test_a_shims_configured_name_rebinds_its_agent_while_offline_but_never_while_online(
    fresh_mailbox: Mailbox, project: str
) -> None:
    mailbox = fresh_mailbox
    with shim_hello(mailbox, "editor-1", "BlueLake") as first:
        created = register(first, project)  # the name comes from the hello (AGENT_MAIL_NAME)
        assert created["name"] == "BlueLake"
        with shim_hello(mailbox, "intruder", "BlueLake") as intruder, pytest.raises(
            AuthenticationRequired, match="online in another session"
        ):
            intruder.call_tool("fetch_inbox", {"project_key": project})
    wait_offline(mailbox, project, "BlueLake")
    with shim_hello(mailbox, "editor-2", "blue-lake") as restarted:
        inbox = restarted.call_tool("fetch_inbox", {"project_key": project})
        assert inbox["agent"] == "BlueLake", "the editor's restarted shim is its agent again"


def test_the_operator_name_is_reserved_for_the_command_line(mailbox: Mailbox, project: str) -> None:
    with agent_session(mailbox, "pretender") as conn, pytest.raises(NameTaken, match="reserved"):
        register(conn, project, name="human-operator")
    mailbox.mailctl("send", "HumanOperator", "note to self", "x")
    with agent_session(mailbox, "pretender-2") as conn, pytest.raises(NameTaken, match="reserved"):
        register(conn, project, name="HumanOperator", force_reclaim=True)


def test_mailctl_acts_as_an_agent_only_with_its_token(fresh_mailbox: Mailbox, project: str) -> None:
    mailbox = fresh_mailbox
    with agent_session(mailbox, "victim") as victim:
        target = register(victim, project, name="TrustedLead")
    for env, needle in (({"AGENT_MAIL_NAME": "TrustedLead"}, "needs TrustedLead's registration token"),
                        ({"AGENT_MAIL_NAME": "TrustedLead", "AGENT_MAIL_TOKEN": "wrong"}, "not TrustedLead's")):
        spoof = subprocess.run(
            [sys.executable, "-P", "-m", "mailctl", "send", "TrustedLead", "I am the lead", "x", "--project", project],
            env={**mailbox.env, **env}, cwd=mailbox.root, capture_output=True, text=True, check=False,
        )
        assert spoof.returncode == 1
        assert spoof.stderr.startswith("mailctl: AUTHENTICATION_REQUIRED: ")
        assert needle in spoof.stderr
    spoof = mailbox.mailctl("inbox", "--as", "TrustedLead", check=False)
    assert "AUTHENTICATION_REQUIRED" in spoof.stderr
    real = subprocess.run(
        [sys.executable, "-P", "-m", "mailctl", "send", "TrustedLead", "from me", "x", "--json", "--project", project],
        env={**mailbox.env, "AGENT_MAIL_NAME": "TrustedLead", "AGENT_MAIL_TOKEN": target["registration_token"]},
        cwd=mailbox.root, capture_output=True, text=True, check=True,
    )
    assert json.loads(real.stdout)["deliveries"][0]["payload"]["from"] == "TrustedLead"
    with agent_session(mailbox, "victim-again") as victim:
        inbox = register(victim, project, name="TrustedLead", registration_token=target["registration_token"],
                         auto_fetch_inbox=True)
        assert [m["subject"] for m in inbox["inbox"]] == ["from me"], "the spoofed sends delivered nothing"


@pytest.mark.anyio
async def test_an_agents_shim_is_never_the_operator(fresh_mailbox: Mailbox, project: str) -> None:
    mailbox = fresh_mailbox
    with agent_session(mailbox, "a") as a, agent_session(mailbox, "b") as b:
        register(a, project, name="BlueLake")
        register(b, project, name="GreenCastle")
        sent = a.call_tool("send_message", {"project_key": project, "to": "GreenCastle", "subject": "private plan",
                                            "body_md": "x", "thread_id": "PRIV-1"})
    message_id = sent["deliveries"][0]["payload"]["id"]
    shim = StdioServerParameters(command=sys.executable, args=["-P", "-m", "mailctl", "mcp"], env=mailbox.env,
                                 cwd=str(mailbox.root))
    async with Client(shim, mode="legacy") as client:
        with pytest.raises(MCPError, match="does not exist"):
            await client.read_resource(f"resource://message/{message_id}")
        thread = await client.read_resource("resource://thread/PRIV-1")
        assert json.loads(thread.contents[0].text)["messages"] == []  # type: ignore[union-attr]
        searched = await client.call_tool("search_mailbox", {"project_key": project, "query": "private"})
        assert searched.structured_content["error"]["code"] == "AUTHENTICATION_REQUIRED"  # type: ignore[index]
    operator = mailbox.mailctl("thread", "PRIV-1", "--project", project)
    assert "private plan" in operator.stdout, "the CLI (the operator) reads every thread"


def test_binding_survives_a_daemon_restart(fresh_mailbox: Mailbox, project: str) -> None:
    mailbox = fresh_mailbox
    with agent_session(mailbox, "durable") as conn:
        agent = register(conn, project)
    mailbox.stop()
    with agent_session(mailbox, "durable") as conn:
        assert conn.call_tool("fetch_inbox", {"project_key": project})["agent"] == agent["name"]


def test_create_agent_identity_always_makes_a_new_agent_in_an_existing_project(mailbox: Mailbox, project: str) -> None:
    with agent_session(mailbox, "c") as conn:
        with pytest.raises(NotFound, match="ensure_project"):
            conn.call_tool("create_agent_identity", {"project_key": "/nope", "program": "p", "model": "m"})
        conn.call_tool("ensure_project", {"human_key": project})
        one = conn.call_tool("create_agent_identity", {"project_key": project, "program": "p", "model": "m"})
        two = conn.call_tool("create_agent_identity", {"project_key": project, "program": "p", "model": "m"})
        assert one["id"] != two["id"]


def test_acting_as_another_agent_without_its_token_is_refused(mailbox: Mailbox, project: str) -> None:
    with agent_session(mailbox, "victim") as victim, agent_session(mailbox, "mallory") as mallory:
        target = register(victim, project, name="TrustedLead")
        register(mallory, project, name="Mallory")
        with pytest.raises(AuthenticationRequired, match="registration_token"):
            mallory.call_tool("fetch_inbox", {"project_key": project, "agent_name": "TrustedLead"})
        allowed = mallory.call_tool(
            "fetch_inbox",
            {"project_key": project, "agent_name": "TrustedLead", "registration_token": target["registration_token"]},
        )
        assert allowed["agent"] == "TrustedLead"


def test_an_unbound_session_must_say_who_it_is(mailbox: Mailbox, project: str) -> None:
    with mailbox.client() as anonymous:
        anonymous.call_tool("ensure_project", {"human_key": project})
        with pytest.raises(InvalidArgument, match="register_agent first"):
            anonymous.call_tool("fetch_inbox", {"project_key": project})


def test_mailctl_call_register_prints_the_agent(mailbox: Mailbox, project: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mailctl", "call", "register_agent", f"project_key={project}", "program=cli",
         "model=none", "name=CliBot"],
        env=mailbox.env, capture_output=True, text=True, check=True,
    )
    assert '"name": "CliBot"' in run.stdout
