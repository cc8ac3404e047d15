"""Build slots through the real daemon: the 16-way race (official MCP client through real shims),
exclusive and shared leases, conflicts naming holder and expiry, renew and release rules, stable
errors, the background sweep and the archive; `mailctl slots` and `mailctl run` as subprocesses
(exit code passed through, renewal, busy slot, --wait, Ctrl-C)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import anyio
import apsw
import pytest

from shared.client import DaemonClient
from shared.errors import InvalidArgument, NotFound, SlotNotHeld
from tests.conftest import Mailbox


def agent(mailbox: Mailbox, name: str) -> DaemonClient:
    conn = mailbox.client(hello={"session": f"s-{name}", "client": "test", "pid": 1})
    conn.call_tool("register_agent", {"project_key": str(mailbox.root), "program": "p", "model": "m", "name": name})
    return conn


def slot_call(conn: DaemonClient, tool: str, mailbox: Mailbox, slot: str, **extra: Any) -> dict[str, Any]:
    return conn.call_tool(tool, {"project_key": str(mailbox.root), "slot": slot, **extra})  # type: ignore[no-any-return]


def ts(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def db_execute(mailbox: Mailbox, sql: str, *params: Any) -> list[Any]:
    db = apsw.Connection(str(mailbox.paths.db))
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


@pytest.mark.anyio
async def test_sixteen_agents_racing_through_shims_get_exactly_one_exclusive_holder(mailbox: Mailbox) -> None:
    from mcp import Client

    from tests.test_shim import shim_params, structured

    names = [f"Racer{chr(ord('A') + i)}" for i in range(16)]
    results: dict[str, dict[str, Any]] = {}
    phases = {phase: (anyio.Event(), anyio.Event(), [0]) for phase in ("exclusive", "shared")}  # ready, go, count

    async def ask(client: Any, name: str, phase: str) -> None:
        ready, go, count = phases[phase]
        count[0] += 1
        if count[0] == len(names):
            ready.set()
        await go.wait()  # every client is connected and bound: now they all ask at once
        results[f"{phase}:{name}"] = structured(await client.call_tool(
            "acquire_build_slot", {"slot": "frontend-build", "exclusive": phase == "exclusive", "ttl_seconds": 600}))

    async def racer(name: str) -> None:
        async with Client(shim_params(mailbox, "--tools", "extended"), mode="legacy") as client:  # type: ignore[arg-type]
            structured(await client.call_tool("register_agent", {"program": "p", "model": "m", "name": name}))
            await ask(client, name, "exclusive")
            await ask(client, name, "shared")

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(racer, name)
            await phases["exclusive"][0].wait()
            phases["exclusive"][1].set()
            await phases["shared"][0].wait()
            exclusive = {k.split(":")[1]: r for k, r in results.items()}
            winners = [name for name, r in exclusive.items() if r["granted"]]
            assert len(winners) == 1, winners
            [winner] = winners
            for name, result in exclusive.items():
                if name != winner:
                    assert result["conflicts"] == [{"agent": winner, "branch": "main", "exclusive": True,
                                                    "acquired_ts": exclusive[winner]["acquired_ts"],
                                                    "expires_ts": exclusive[winner]["expires_ts"]}]
            with agent(mailbox, "Outsider") as outsider:  # a shared lease conflicts with an exclusive holder too
                busy = slot_call(outsider, "acquire_build_slot", mailbox, "frontend-build", exclusive=False)
                slug = outsider.call_tool("ensure_project", {"human_key": str(mailbox.root)})["slug"]
            assert not busy["granted"]
            assert busy["conflicts"][0]["agent"] == winner
            # The winner's lease ends; now all sixteen share the slot at once.
            db_execute(mailbox, "UPDATE build_slots SET expires_ts = '2020-01-01T00:00:00.000000Z'")
            phases["shared"][1].set()
    assert all(results[f"shared:{n}"]["granted"] for n in names)
    with mailbox.client() as conn:
        held = conn.read_resource(f"resource://build_slots/{slug}?active_only=true")["slots"]
    assert sorted(lease["agent"] for lease in held) == sorted(names)
    assert all(not lease["exclusive"] for lease in held)


def test_leases_conflict_by_mode_and_branch_renew_never_shortens_and_release_is_idempotent(mailbox: Mailbox) -> None:
    blue, green = agent(mailbox, "BlueLake"), agent(mailbox, "GreenCastle")
    try:
        shared = slot_call(blue, "acquire_build_slot", mailbox, "test-db", exclusive=False, ttl_seconds=7200)
        assert shared["granted"]
        assert shared["branch"] == "main"
        assert shared["exclusive"] is False
        assert slot_call(green, "acquire_build_slot", mailbox, "test-db", exclusive=False)["granted"]
        refused = slot_call(green, "acquire_build_slot", mailbox, "test-db", branch="feature/login")
        assert refused["granted"] is False
        # Its own lease on main conflicts too: one lease per (agent, branch), as two worktrees would build.
        assert [(c["agent"], c["branch"]) for c in refused["conflicts"]] == [("BlueLake", "main"),
                                                                            ("GreenCastle", "main")]
        assert refused["conflicts"][0]["expires_ts"] == shared["expires_ts"]
        # One agent in two worktrees holds two leases: an exclusive one on another branch conflicts with it.
        mine = slot_call(blue, "acquire_build_slot", mailbox, "bundle", branch="feature/a")
        assert mine["granted"]
        other_branch = slot_call(blue, "acquire_build_slot", mailbox, "bundle", branch="feature/b")
        assert other_branch["conflicts"][0]["branch"] == "feature/a"

        renewed = slot_call(blue, "renew_build_slot", mailbox, "test-db", extend_seconds=60)
        assert renewed["expires_ts"] == shared["expires_ts"], "a 2 h lease renewed by 60 s keeps its 2 h"
        longer = slot_call(blue, "renew_build_slot", mailbox, "test-db", extend_seconds=10_000)
        assert ts(longer["expires_ts"]) > ts(shared["expires_ts"])
        again = slot_call(blue, "acquire_build_slot", mailbox, "test-db", exclusive=False, ttl_seconds=60)
        assert again["expires_ts"] == longer["expires_ts"], "re-acquiring never shortens either"

        assert slot_call(blue, "release_build_slot", mailbox, "test-db")["released"] is True
        twice = slot_call(blue, "release_build_slot", mailbox, "test-db")
        assert twice["released"] is False
        assert twice["released_ts"]
        with pytest.raises(SlotNotHeld, match="call acquire_build_slot again") as not_held:
            slot_call(blue, "renew_build_slot", mailbox, "test-db")
        assert not_held.value.code == "SLOT_NOT_HELD"
        with pytest.raises(SlotNotHeld, match="never acquired"):
            slot_call(green, "renew_build_slot", mailbox, "nobody-took-this")
        # Acquiring again reuses the holder's row: the table grows with holders, not with builds.
        for _ in range(3):
            slot_call(blue, "acquire_build_slot", mailbox, "test-db", exclusive=False)
            slot_call(blue, "release_build_slot", mailbox, "test-db")
        assert db_execute(mailbox, "SELECT count(*) FROM build_slots WHERE slot = 'test-db'") == [(2,)]

        for bad, match in (({"slot": "../etc"}, "not a slot name"), ({"slot": "a b"}, "not a slot name"),
                           ({"branch": "two words"}, "not a branch name"), ({"ttl_seconds": 59}, "between 60"),
                           ({"ttl_seconds": 10**9}, "between 60")):
            with pytest.raises(InvalidArgument, match=match):
                blue.call_tool("acquire_build_slot", {"project_key": str(mailbox.root), "slot": "ok", **bad})
        with pytest.raises(NotFound, match="ensure_project"):
            blue.call_tool("acquire_build_slot", {"project_key": "/no/such/project", "slot": "ok"})

        # Retiring an agent releases its slots; deleting it for good deletes them.
        green.call_tool("retire_agent", {"project_key": str(mailbox.root)})
        assert db_execute(mailbox, "SELECT count(*) FROM build_slots s JOIN agents a ON a.id = s.agent_id"
                                   " WHERE a.name = 'GreenCastle' AND s.released_ts IS NULL") == [(0,)]
        deleted = blue.call_tool("hard_delete_agent", {"project_key": str(mailbox.root), "agent_name": "BlueLake",
                                                       "confirmation": "I UNDERSTAND"})
        assert deleted["build_slots_deleted"] == 2  # test-db, and bundle on feature/a (feature/b was refused)
    finally:
        blue.close()
        green.close()


def write_config(mailbox: Mailbox, **values: float) -> None:
    mailbox.paths.state_dir.mkdir(parents=True, exist_ok=True)
    (mailbox.paths.state_dir / "config.toml").write_text("".join(f"{k} = {v}\n" for k, v in values.items()))


def archived(mailbox: Mailbox, path: str) -> dict[str, Any] | None:
    shown = subprocess.run(["git", "--git-dir", str(mailbox.paths.archive), "show", f"main:{path}"],
                           capture_output=True, text=True, check=False)
    return json.loads(shown.stdout) if shown.returncode == 0 else None


def wait_for(predicate: Any, what: str, limit: float = 30) -> Any:
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_sweep_releases_expired_slots_and_the_archive_keeps_one_file_per_lease(mailbox: Mailbox) -> None:
    write_config(mailbox, reservation_sweep_seconds=0.1)
    with agent(mailbox, "BlueLake") as blue:
        slot_call(blue, "acquire_build_slot", mailbox, "ci", branch="feature/x")
        for _ in range(3):
            slot_call(blue, "renew_build_slot", mailbox, "ci", branch="feature/x", extend_seconds=7200)
        slug = blue.call_tool("ensure_project", {"human_key": str(mailbox.root)})["slug"]
    db_execute(mailbox, "UPDATE build_slots SET expires_ts = '2020-01-01T00:00:00.000000Z'")
    wait_for(lambda: db_execute(mailbox, "SELECT released_ts FROM build_slots")[0][0], "the sweep")
    assert db_execute(mailbox, "SELECT released_ts FROM build_slots") == [("2020-01-01T00:00:00.000000Z",)]

    def listing() -> list[str]:
        found = subprocess.run(["git", "--git-dir", str(mailbox.paths.archive), "ls-tree", "-r", "--name-only",
                                "main", f"projects/{slug}/build_slots"], capture_output=True, text=True, check=False)
        return found.stdout.split()

    def released_in_archive() -> dict[str, Any] | None:
        files = listing()
        lease = archived(mailbox, files[0]) if len(files) == 1 else None
        return lease if lease and lease["released_ts"] else None

    lease = wait_for(released_in_archive, "the archived release")
    [path] = listing()  # acquire, three renewals and the expiry rewrote one file
    assert path.startswith(f"projects/{slug}/build_slots/ci/BlueLake__feature-x~")
    assert lease == {"slot": "ci", "agent": "BlueLake", "agent_id": lease["agent_id"], "branch": "feature/x",
                     "exclusive": True, "acquired_ts": lease["acquired_ts"],
                     "expires_ts": "2020-01-01T00:00:00.000000Z", "released_ts": "2020-01-01T00:00:00.000000Z"}
    log = subprocess.run(["git", "--git-dir", str(mailbox.paths.archive), "log", "--format=%B", "main"],
                         capture_output=True, text=True, check=True).stdout
    assert "build_slot: BlueLake expired ci@feature/x" in log
    with agent(mailbox, "GreenCastle") as green:  # expired leases never block anybody
        assert slot_call(green, "acquire_build_slot", mailbox, "ci")["granted"]
    if mailbox.backend != "asyncio":
        return  # the rebuild below runs without a daemon: once is enough
    wait_for(lambda: len(listing()) == 2, "GreenCastle's lease in the archive")
    mailbox.stop()
    mailbox.mailctl("doctor", "--rebuild", "--yes")  # the archive alone gives the leases back
    rows = db_execute(mailbox, "SELECT a.name, s.slot, s.branch, s.exclusive, s.released_ts FROM build_slots s"
                               " JOIN agents a ON a.id = s.agent_id ORDER BY a.name")
    assert rows == [("BlueLake", "ci", "feature/x", 1, "2020-01-01T00:00:00.000000Z"),
                    ("GreenCastle", "ci", "main", 1, None)]


# --- the CLI: one daemon for the module, each test on its own slot ---

def mailctl(box: Mailbox, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return box.mailctl(*args, check=check)


def lease_of(box: Mailbox, slot: str) -> dict[str, Any]:
    slots = json.loads(mailctl(box, "slots", "--all", "--json").stdout)["slots"]
    [lease] = [s for s in slots if s["slot"] == slot]
    return lease  # type: ignore[no-any-return]


def test_run_passes_the_exit_code_through_renews_while_running_and_releases(module_mailbox: Mailbox) -> None:
    box = module_mailbox
    script = "import time, sys; time.sleep(2.5); print('built'); sys.exit(7)"
    run = mailctl(box, "run", "--slot", "cli-build", "--ttl", "60", "--renew-every", "1", "--",
                  sys.executable, "-c", script, check=False)
    assert run.returncode == 7, run.stderr
    assert run.stdout == "built\n"
    lease = lease_of(box, "cli-build")
    assert lease["agent"] == "HumanOperator"
    assert lease["branch"] == "main"
    assert lease["released_ts"]
    assert ts(lease["expires_ts"]) - ts(lease["acquired_ts"]) > dt.timedelta(seconds=61), "renewed while running"
    table = mailctl(box, "slots", "--all").stdout
    assert "cli-build" in table
    assert "HumanOperator" in table
    assert "released" in table
    missing = mailctl(box, "run", "--slot", "cli-build", "--", "no-such-command-xyz", check=False)
    assert missing.returncode == 127
    assert "no-such-command-xyz" in missing.stderr
    assert lease_of(box, "cli-build")["released_ts"], "released after a command that could not start"
    usage = mailctl(box, "run", "--slot", "cli-build", check=False)
    assert usage.returncode == 2
    assert "after `--`" in usage.stderr


def test_run_on_a_busy_slot_warns_and_exits_75_unless_it_waits(module_mailbox: Mailbox) -> None:
    box = module_mailbox
    holder = box.client(hello={"session": "s-holder", "client": "test", "pid": 1})
    try:
        holder.call_tool("register_agent", {"project_key": str(box.root), "program": "p", "model": "m",
                                            "name": "SlotHolder"})
        held = holder.call_tool("acquire_build_slot", {"project_key": str(box.root), "slot": "cli-busy"})
        busy = mailctl(box, "run", "--slot", "cli-busy", "--", "true", check=False)
        assert busy.returncode == 75
        assert "held by SlotHolder on main (exclusive, until" in busy.stderr
        assert held["expires_ts"][:16].replace("T", " ") in busy.stderr
        assert "--wait" in busy.stderr
        gave_up = mailctl(box, "run", "--slot", "cli-busy", "--wait", "0.5", "--", "true", check=False)
        assert gave_up.returncode == 75
        waiter = subprocess.Popen([sys.executable, "-P", "-m", "mailctl", "run", "--slot", "cli-busy", "--wait", "--",
                                   sys.executable, "-c", "print('got it')"], env=box.env, cwd=box.root,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert waiter.stderr is not None
            assert "waiting for it" in waiter.stderr.readline()
            holder.call_tool("release_build_slot", {"project_key": str(box.root), "slot": "cli-busy"})
            out, _err = waiter.communicate(timeout=60)
        finally:
            if waiter.poll() is None:
                waiter.kill()
                waiter.communicate()
        assert (waiter.returncode, out) == (0, "got it\n")
    finally:
        holder.close()


def test_ctrl_c_ends_the_command_and_releases_the_slot(module_mailbox: Mailbox) -> None:
    box = module_mailbox
    script = "import time; print('started', flush=True); time.sleep(60)"
    # A shell's background job starts with SIGINT ignored, and an ignored signal stays ignored across
    # exec: handle it here while spawning, so the children start as a terminal's foreground job would.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-P", "-m", "mailctl", "run", "--slot", "cli-ctrl-c", "--shared",
                                 "--", sys.executable, "-c", script], env=box.env, cwd=box.root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, before)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "started\n"
        lease = lease_of(box, "cli-ctrl-c")
        assert lease["active"]
        assert lease["exclusive"] is False
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the whole foreground group
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130
    assert lease_of(box, "cli-ctrl-c")["released_ts"]
