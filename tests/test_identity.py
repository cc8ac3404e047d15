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
from tests.conftest import Mailbox

PROJECT = "/work/app"


def agent_session(mailbox: Mailbox, session: str) -> DaemonClient:
    return mailbox.client(hello={"session": session, "client": "test", "pid": 1})


def register(conn: DaemonClient, **extra: Any) -> dict[str, Any]:
    args = {"project_key": PROJECT, "program": "claude-code", "model": "opus", **extra}
    result: dict[str, Any] = conn.call_tool("register_agent", args)
    return result


def test_the_word_list_gives_thousands_of_memorable_names() -> None:
    assert names.COMBINATIONS >= 10_000
    assert names.sanitize("Blue_Lake-42!") == "BlueLake42"
    assert names.lookup_key("blue-lake") == "bluelake"


def test_register_generates_a_name_returns_a_token_once_and_binds_the_session(mailbox: Mailbox) -> None:
    with agent_session(mailbox, "s1") as conn:
        agent = register(conn)
        assert agent["created"] is True
        assert agent["name"][0].isupper()
        assert len(agent["registration_token"]) >= 24
        again = register(conn, name=agent["name"], task_description="now reviewing")
        assert again["id"] == agent["id"]
        assert "registration_token" not in again
        assert again["task_description"] == "now reviewing"
        inbox = conn.call_tool("fetch_inbox", {"project_key": PROJECT})
        assert inbox["agent"] == agent["name"], "the session acts as its registered agent by default"


def test_names_are_sanitised_and_unique_case_insensitively(mailbox: Mailbox) -> None:
    with agent_session(mailbox, "a") as a, agent_session(mailbox, "b") as b:
        assert register(a, name="Green_Castle")["name"] == "GreenCastle"
        with pytest.raises(NameTaken, match="online"):
            register(b, name="greencastle")


def test_strict_mode_refuses_a_taken_name_even_offline(mailbox: Mailbox) -> None:
    mailbox.paths.state_dir.mkdir(mode=0o700)
    mailbox.paths.config_file.write_text('name_enforcement_mode = "strict"\n')
    with agent_session(mailbox, "a") as a:
        register(a, name="RedStone")
    with agent_session(mailbox, "b") as b:
        with pytest.raises(NameTaken) as caught:
            register(b, name="redstone")
        assert caught.value.data["conflicting_agents"][0]["name"] == "RedStone"
        with pytest.raises(InvalidArgument, match="no letters or digits"):
            register(b, name="!!!")
        reclaimed = register(b, name="RedStone", force_reclaim=True)
        assert reclaimed["created"] is True


def test_coerce_mode_reclaims_an_offline_name_and_retires_the_old_holder(mailbox: Mailbox) -> None:
    with agent_session(mailbox, "old") as old:
        first = register(old, name="BlueLake")
    with agent_session(mailbox, "new") as new:
        second = register(new, name="blue-lake")
        assert second["name"] == "BlueLake"
        assert second["id"] != first["id"]
        assert register(new, name="BlueLake")["id"] == second["id"]


def test_always_auto_ignores_requested_names(mailbox: Mailbox) -> None:
    mailbox.paths.state_dir.mkdir(mode=0o700)
    mailbox.paths.config_file.write_text('name_enforcement_mode = "always_auto"\n')
    with agent_session(mailbox, "a") as a:
        assert register(a, name="Zzz")["name"] != "Zzz"


def test_a_token_lets_a_new_session_re_register_the_same_identity(mailbox: Mailbox) -> None:
    with agent_session(mailbox, "first") as first:
        agent = register(first, name="SilverFox")
        with agent_session(mailbox, "second") as second:
            again = register(second, name="SilverFox", registration_token=agent["registration_token"])
            assert again["id"] == agent["id"]
        with agent_session(mailbox, "third") as third, pytest.raises(NameTaken, match="online"):
            register(third, name="SilverFox", registration_token="wrong")


def test_twenty_concurrent_registrations_of_one_name_have_exactly_one_winner_in_strict_mode(mailbox: Mailbox) -> None:
    mailbox.paths.state_dir.mkdir(mode=0o700)
    mailbox.paths.config_file.write_text('name_enforcement_mode = "strict"\n')
    mailbox.call("health_check")

    def attempt(i: int) -> str:
        with agent_session(mailbox, f"racer-{i}") as conn:
            try:
                register(conn, name="SwiftOtter")
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
def test_register_validates_every_argument(mailbox: Mailbox, extra: dict[str, Any], error: type, needle: str) -> None:
    with agent_session(mailbox, "v") as conn, pytest.raises(error, match=needle):
        register(conn, **extra)


def test_hostile_names_are_sanitised_not_used_as_paths(mailbox: Mailbox) -> None:
    with agent_session(mailbox, "h") as conn:
        agent = register(conn, name="../../etc/passwd")
        assert agent["name"] == "etcpasswd"
        unicode_name = register(conn, name="Ünïcødé", force_reclaim=True, rebind=True)  # a second identity
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


def test_whois_shows_presence_and_the_agents_recent_archive_commits(mailbox: Mailbox) -> None:
    with agent_session(mailbox, "w1") as conn:
        agent = register(conn, name="AmberHawk")
        wait_archived(mailbox)  # its own commit, so the two agents' histories differ
    with agent_session(mailbox, "w2") as conn:
        register(conn, name="Bystander")
        wait_archived(mailbox)
    with mailbox.client() as anonymous:
        offline = anonymous.call_tool("whois", {"project_key": PROJECT, "agent_name": "amber-hawk"})
        assert offline["online"] is False
        assert offline["last_seen_ts"] is not None
        [commit] = offline["recent_commits"]
        assert re.fullmatch(r"[0-9a-f]{12}", commit["hexsha"])
        touched = subprocess.run(["git", "--git-dir", str(mailbox.paths.archive), "show", "--name-only",
                                  "--format=", commit["hexsha"]], capture_output=True, text=True, check=True).stdout
        assert "projects/work-app/agents/AmberHawk/profile.json" in touched.split()
        other = anonymous.call_tool("whois", {"project_key": PROJECT, "agent_name": "Bystander"})
        assert [c["hexsha"] for c in other["recent_commits"]] != [commit["hexsha"]]
        token = {"token": agent["registration_token"]}
        with mailbox.client(hello={"session": "shim-1", "agent": "AmberHawk", "client": "shim", **token}) as shim:
            assert shim.call_tool("fetch_inbox", {"project_key": PROJECT})["agent"] == "AmberHawk"
            online = anonymous.call_tool("whois", {"project_key": PROJECT, "agent_name": "AmberHawk"})
            assert online["online"] is True
        with pytest.raises(NotFound):
            anonymous.call_tool("whois", {"project_key": PROJECT, "agent_name": "Nobody"})


def wait_offline(mailbox: Mailbox, name: str, timeout: float = 30) -> None:
    """Bounded poll until the daemon has seen the agent's sessions close (closing is asynchronous)."""
    deadline = time.monotonic() + timeout
    while mailbox.call("whois", project_key=PROJECT, agent_name=name, include_recent_commits=False)["online"]:
        assert time.monotonic() < deadline, f"{name} still online"
        time.sleep(0.02)


def shim_hello(mailbox: Mailbox, session: str, agent: str, token: str | None = None) -> DaemonClient:
    hello = {"session": session, "client": "shim", "pid": 1, "agent": agent, **({"token": token} if token else {})}
    return mailbox.client(hello=hello)


def test_a_hello_naming_an_agent_without_its_token_does_not_take_it_over(mailbox: Mailbox) -> None:
    with agent_session(mailbox, "lead") as lead:
        target = register(lead, name="TrustedLead")  # registered by name: it holds a token
        lead.call_tool("send_message", {"project_key": PROJECT, "to": "TrustedLead", "subject": "secret",
                                        "body_md": "x"})
        for session, token, needle in (("spoof-online", None, "online in another session"),
                                       ("spoof-wrong", "wrong", "not TrustedLead's")):
            with shim_hello(mailbox, session, "TrustedLead", token) as spoof:
                with pytest.raises(AuthenticationRequired, match=needle) as caught:
                    spoof.call_tool("fetch_inbox", {"project_key": PROJECT})
                assert "AGENT_MAIL_TOKEN" in caught.value.message
                with pytest.raises(AuthenticationRequired):
                    spoof.call_tool("send_message", {"project_key": PROJECT, "to": "TrustedLead", "subject": "x",
                                                     "body_md": "x"})
        with shim_hello(mailbox, "own-token", "TrustedLead", target["registration_token"]) as second:
            assert second.call_tool("fetch_inbox", {"project_key": PROJECT})["agent"] == "TrustedLead", (
                "its token binds a second session even while it is online"
            )
    wait_offline(mailbox, "TrustedLead")
    with shim_hello(mailbox, "spoof-offline", "TrustedLead") as spoof, pytest.raises(
        AuthenticationRequired, match="registered through register_agent"
    ):
        spoof.call_tool("fetch_inbox", {"project_key": PROJECT})


def test_a_shims_configured_name_rebinds_its_agent_while_offline_but_never_while_online(mailbox: Mailbox) -> None:
    with shim_hello(mailbox, "editor-1", "BlueLake") as first:
        created = register(first)  # the name comes from the hello (AGENT_MAIL_NAME)
        assert created["name"] == "BlueLake"
        with shim_hello(mailbox, "intruder", "BlueLake") as intruder, pytest.raises(
            AuthenticationRequired, match="online in another session"
        ):
            intruder.call_tool("fetch_inbox", {"project_key": PROJECT})
    wait_offline(mailbox, "BlueLake")
    with shim_hello(mailbox, "editor-2", "blue-lake") as restarted:
        inbox = restarted.call_tool("fetch_inbox", {"project_key": PROJECT})
        assert inbox["agent"] == "BlueLake", "the editor's restarted shim is its agent again"


def test_the_operator_name_is_reserved_for_the_command_line(mailbox: Mailbox) -> None:
    with agent_session(mailbox, "pretender") as conn, pytest.raises(NameTaken, match="reserved"):
        register(conn, name="human-operator")
    mailbox.mailctl("send", "HumanOperator", "note to self", "x")
    with agent_session(mailbox, "pretender-2") as conn, pytest.raises(NameTaken, match="reserved"):
        register(conn, name="HumanOperator", force_reclaim=True)


def test_mailctl_acts_as_an_agent_only_with_its_token(mailbox: Mailbox) -> None:
    with agent_session(mailbox, "victim") as victim:
        target = register(victim, name="TrustedLead")
    for env, needle in (({"AGENT_MAIL_NAME": "TrustedLead"}, "needs TrustedLead's registration token"),
                        ({"AGENT_MAIL_NAME": "TrustedLead", "AGENT_MAIL_TOKEN": "wrong"}, "not TrustedLead's")):
        spoof = subprocess.run(
            [sys.executable, "-P", "-m", "mailctl", "send", "TrustedLead", "I am the lead", "x", "--project", PROJECT],
            env={**mailbox.env, **env}, cwd=mailbox.root, capture_output=True, text=True, check=False,
        )
        assert spoof.returncode == 1
        assert spoof.stderr.startswith("mailctl: AUTHENTICATION_REQUIRED: ")
        assert needle in spoof.stderr
    spoof = mailbox.mailctl("inbox", "--as", "TrustedLead", check=False)
    assert "AUTHENTICATION_REQUIRED" in spoof.stderr
    real = subprocess.run(
        [sys.executable, "-P", "-m", "mailctl", "send", "TrustedLead", "from me", "x", "--json", "--project", PROJECT],
        env={**mailbox.env, "AGENT_MAIL_NAME": "TrustedLead", "AGENT_MAIL_TOKEN": target["registration_token"]},
        cwd=mailbox.root, capture_output=True, text=True, check=True,
    )
    assert json.loads(real.stdout)["deliveries"][0]["payload"]["from"] == "TrustedLead"
    with agent_session(mailbox, "victim-again") as victim:
        inbox = register(victim, name="TrustedLead", registration_token=target["registration_token"],
                         auto_fetch_inbox=True)
        assert [m["subject"] for m in inbox["inbox"]] == ["from me"], "the spoofed sends delivered nothing"


@pytest.mark.anyio
async def test_an_agents_shim_is_never_the_operator(mailbox: Mailbox) -> None:
    with agent_session(mailbox, "a") as a, agent_session(mailbox, "b") as b:
        register(a, name="BlueLake")
        register(b, name="GreenCastle")
        sent = a.call_tool("send_message", {"project_key": PROJECT, "to": "GreenCastle", "subject": "private plan",
                                            "body_md": "x", "thread_id": "PRIV-1"})
    message_id = sent["deliveries"][0]["payload"]["id"]
    shim = StdioServerParameters(command=sys.executable, args=["-P", "-m", "mailctl", "mcp"], env=mailbox.env,
                                 cwd=str(mailbox.root))
    async with Client(shim, mode="legacy") as client:
        with pytest.raises(MCPError, match="does not exist"):
            await client.read_resource(f"resource://message/{message_id}")
        thread = await client.read_resource("resource://thread/PRIV-1")
        assert json.loads(thread.contents[0].text)["messages"] == []  # type: ignore[union-attr]
        searched = await client.call_tool("search_mailbox", {"project_key": PROJECT, "query": "private"})
        assert searched.structured_content["error"]["code"] == "AUTHENTICATION_REQUIRED"  # type: ignore[index]
    operator = mailbox.mailctl("thread", "PRIV-1", "--project", PROJECT)
    assert "private plan" in operator.stdout, "the CLI (the operator) reads every thread"


def test_binding_survives_a_daemon_restart(mailbox: Mailbox) -> None:
    with agent_session(mailbox, "durable") as conn:
        agent = register(conn)
    mailbox.stop()
    with agent_session(mailbox, "durable") as conn:
        assert conn.call_tool("fetch_inbox", {"project_key": PROJECT})["agent"] == agent["name"]


def test_create_agent_identity_always_makes_a_new_agent_in_an_existing_project(mailbox: Mailbox) -> None:
    with agent_session(mailbox, "c") as conn:
        with pytest.raises(NotFound, match="ensure_project"):
            conn.call_tool("create_agent_identity", {"project_key": "/nope", "program": "p", "model": "m"})
        conn.call_tool("ensure_project", {"human_key": PROJECT})
        one = conn.call_tool("create_agent_identity", {"project_key": PROJECT, "program": "p", "model": "m"})
        two = conn.call_tool("create_agent_identity", {"project_key": PROJECT, "program": "p", "model": "m"})
        assert one["id"] != two["id"]


def test_acting_as_another_agent_without_its_token_is_refused(mailbox: Mailbox) -> None:
    with agent_session(mailbox, "victim") as victim, agent_session(mailbox, "mallory") as mallory:
        target = register(victim, name="TrustedLead")
        register(mallory, name="Mallory")
        with pytest.raises(AuthenticationRequired, match="registration_token"):
            mallory.call_tool("fetch_inbox", {"project_key": PROJECT, "agent_name": "TrustedLead"})
        allowed = mallory.call_tool(
            "fetch_inbox",
            {"project_key": PROJECT, "agent_name": "TrustedLead", "registration_token": target["registration_token"]},
        )
        assert allowed["agent"] == "TrustedLead"


def test_an_unbound_session_must_say_who_it_is(mailbox: Mailbox) -> None:
    with mailbox.client() as anonymous:
        anonymous.call_tool("ensure_project", {"human_key": PROJECT})
        with pytest.raises(InvalidArgument, match="register_agent first"):
            anonymous.call_tool("fetch_inbox", {"project_key": PROJECT})


def test_mailctl_call_register_prints_the_agent(mailbox: Mailbox) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mailctl", "call", "register_agent", f"project_key={PROJECT}", "program=cli",
         "model=none", "name=CliBot"],
        env=mailbox.env, capture_output=True, text=True, check=True,
    )
    assert '"name": "CliBot"' in run.stdout
