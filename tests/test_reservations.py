"""File reservations through the real daemon: grants, conflicts, validation, the atomic race, renew,
release, stale force-release with notification and its activity signals (mail, file mtimes, git
commits) and settings, the background expiry sweep, macros.

Here `mailbox` is each test's own project repo on a daemon the module shares (one per backend); the
tests that write settings before the daemon starts take `fresh_mailbox`."""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import apsw
import pytest

from maild.services.reservations import ReservationActive
from shared.client import DaemonClient
from shared.errors import InvalidArgument, NotFound
from shared.globs import PatternIndex, overlaps
from tests.conftest import Mailbox, ProjectBox


@pytest.fixture
def mailbox(project_box: ProjectBox) -> ProjectBox:
    return project_box


def agent(mailbox: Mailbox, name: str) -> DaemonClient:
    conn = mailbox.client(hello={"session": mailbox.session(f"s-{name}"), "client": "test", "pid": 1})
    conn.call_tool("register_agent", {"project_key": str(mailbox.root), "program": "p", "model": "m", "name": name})
    return conn


def reserve(conn: DaemonClient, mailbox: Mailbox, paths: list[str], **extra: Any) -> dict[str, Any]:
    return conn.call_tool("file_reservation_paths",  # type: ignore[no-any-return]
                          {"project_key": str(mailbox.root), "paths": paths, **extra})


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("src/**", "src/app.py", True),
        ("src/app.py", "src/**", True),
        ("src/", "src/deep/x.py", True),
        ("*.py", "src/app.py", True),
        ("docs/*.md", "src/app.py", False),
        ("src/a.py", "src/a.py", True),
        ("tool://deploy", "tool://deploy", True),
        ("tool://deploy", "**", False),
        ("resource://x", "resource://y", False),
    ],
)
def test_overlap_is_gitignore_style_and_symmetric(a: str, b: str, expected: bool) -> None:
    assert overlaps(a, b) is expected
    assert overlaps(b, a) is expected


def test_grants_report_conflicts_advisorily_and_fail_on_conflict_grants_nothing(mailbox: Mailbox) -> None:
    blue, green = agent(mailbox, "BlueLake"), agent(mailbox, "GreenCastle")
    first = reserve(blue, mailbox, ["src/auth/**"], reason="auth refactor")
    assert first["granted"][0]["path_pattern"] == "src/auth/**"
    assert first["conflicts"] == []
    advisory = reserve(green, mailbox, ["src/auth/login.py"])
    assert len(advisory["granted"]) == 1, "advisory by default: granted anyway"
    holder = advisory["conflicts"][0]["holders"][0]
    assert (holder["agent"], holder["path_pattern"]) == ("BlueLake", "src/auth/**")
    assert holder["expires_ts"].endswith("Z")
    strict = reserve(green, mailbox, ["src/auth/token.py", "docs/x.md"], fail_on_conflict=True)
    assert strict["granted"] == []
    assert strict["refused"] is True
    shared_ok = reserve(green, mailbox, ["tool://deploy"], exclusive=False)
    assert shared_ok["conflicts"] == []
    slug = mailbox.call("ensure_project", human_key=str(mailbox.root))["slug"]
    listing = blue.read_resource(f"resource://file_reservations/{slug}")
    assert {r["path_pattern"] for r in listing} == {"src/auth/**", "src/auth/login.py", "tool://deploy"}
    blue.close()
    green.close()


@pytest.mark.parametrize(
    ("paths", "extra", "needle"),
    [
        ([], {}, "at least one"),
        (["src/**"], {"ttl_seconds": 59}, "at least 60"),
        (["/etc/passwd"], {}, "outside the project"),
        (["../other/**"], {}, "escapes"),
        ([""], {}, "non-empty"),
    ],
)
def test_bad_reservations_are_refused_with_clear_errors(mailbox: Mailbox, paths: list[str], extra: dict[str, Any],
                                                        needle: str) -> None:
    with agent(mailbox, "BlueLake") as blue, pytest.raises(InvalidArgument, match=needle):
        reserve(blue, mailbox, paths, **extra)


def test_broad_patterns_warn_and_absolute_paths_inside_the_repo_are_made_relative(mailbox: Mailbox) -> None:
    with agent(mailbox, "BlueLake") as blue:
        broad = reserve(blue, mailbox, ["**"])
        assert broad["warnings"]
        inside = reserve(blue, mailbox, [f"{mailbox.root}/src/main.py"])
        assert inside["granted"][0]["path_pattern"] == "src/main.py"


def test_fifty_agents_racing_for_one_exclusive_path_get_exactly_one_grant(mailbox: Mailbox) -> None:
    names = [f"Racer{i}" for i in range(50)]
    conns = [agent(mailbox, n) for n in names]

    def attempt(conn: DaemonClient) -> int:
        return len(reserve(conn, mailbox, ["src/hot.py"], fail_on_conflict=True)["granted"])

    with ThreadPoolExecutor(max_workers=50) as pool:
        grants = list(pool.map(attempt, conns))
    assert sum(grants) == 1
    for conn in conns:
        conn.close()


def test_renew_keeps_exclusive_and_reason_and_release_is_idempotent(mailbox: Mailbox) -> None:
    with agent(mailbox, "BlueLake") as blue:
        granted = reserve(blue, mailbox, ["docs/**"], exclusive=False, reason="docs pass")["granted"][0]
        renewed = blue.call_tool("renew_file_reservations", {"project_key": str(mailbox.root),
                                                             "extend_seconds": 600})
        assert renewed["renewed"] == 1
        assert renewed["file_reservations"][0]["new_expires_ts"] > granted["expires_ts"]
        slug = mailbox.call("ensure_project", human_key=str(mailbox.root))["slug"]
        [row] = blue.read_resource(f"resource://file_reservations/{slug}")
        assert (row["exclusive"], row["reason"]) == (False, "docs pass")
        released = blue.call_tool("release_file_reservations", {"project_key": str(mailbox.root)})
        assert released["released"] == 1
        again = blue.call_tool("release_file_reservations", {"project_key": str(mailbox.root)})
        assert again["released"] == 0
        assert blue.read_resource(f"resource://file_reservations/{slug}?active_only=true") == []


def test_force_release_refuses_an_active_holder_and_notifies_a_stale_one(mailbox: Mailbox) -> None:
    blue, green = agent(mailbox, "BlueLake"), agent(mailbox, "GreenCastle")
    rid = reserve(blue, mailbox, ["src/legacy/**"])["granted"][0]["id"]
    with pytest.raises(ReservationActive.__mro__[1]) as caught:  # MailError carrying RESERVATION_ACTIVE
        green.call_tool("force_release_file_reservation", {"project_key": str(mailbox.root),
                                                           "file_reservation_id": rid})
    assert caught.value.code == "RESERVATION_ACTIVE"
    assert "agent_recently_active" in caught.value.data["stale_reasons"]
    # Make BlueLake look idle for hours (as if its editor died long ago).
    blue.close()
    db = apsw.Connection(str(mailbox.paths.db))
    db.execute("UPDATE agents SET last_active_ts = '2020-01-01T00:00:00.000000Z' WHERE name = 'BlueLake'")
    db.close()
    result = green.call_tool("force_release_file_reservation", {"project_key": str(mailbox.root),
                                                                "file_reservation_id": rid, "note": "taking over"})
    assert result["released"] == 1
    assert result["reservation"]["notified"] is True
    with pytest.raises(NotFound):
        green.call_tool("force_release_file_reservation", {"project_key": str(mailbox.root),
                                                           "file_reservation_id": 9999})
    with agent(mailbox, "BlueLake") as blue_again:
        inbox = blue_again.call_tool("fetch_inbox", {"project_key": str(mailbox.root), "include_bodies": True})
        [note] = inbox["result"]
        assert note["subject"] == "[file-reservations] Released stale lock on src/legacy/**"
        assert "taking over" in note["body_md"]
    green.close()


def test_expired_reservations_never_conflict(mailbox: Mailbox) -> None:
    blue, green = agent(mailbox, "BlueLake"), agent(mailbox, "GreenCastle")
    reserve(blue, mailbox, ["src/**"])
    db = apsw.Connection(str(mailbox.paths.db))
    db.execute("UPDATE file_reservations SET expires_ts = '2020-01-01T00:00:00.000000Z'")
    db.close()
    assert reserve(green, mailbox, ["src/x.py"], fail_on_conflict=True)["granted"]
    blue.close()
    green.close()


def test_macros_start_a_session_and_run_a_reservation_cycle(mailbox: Mailbox) -> None:
    with mailbox.client(hello={"session": mailbox.session("macro"), "client": "test", "pid": os.getpid()}) as conn:
        started = conn.call_tool("macro_start_session", {"human_key": str(mailbox.root), "program": "p",
                                                         "model": "m", "agent_name": "MacroBot",
                                                         "file_reservation_paths": ["lib/**"]})
        assert started["agent"]["name"] == "MacroBot"
        assert started["file_reservations"]["granted"][0]["path_pattern"] == "lib/**"
        assert started["inbox"] == []
        cycle = conn.call_tool("macro_file_reservation_cycle", {"project_key": str(mailbox.root),
                                                                "paths": ["tmp/*.txt"], "auto_release": True})
        assert cycle["released"]["released"] == 1
    time.sleep(0)


def test_macro_prepare_thread_registers_reads_the_inbox_and_summarises(mailbox: Mailbox) -> None:
    project = str(mailbox.root)
    with agent(mailbox, "Writer") as writer, mailbox.client(
        hello={"session": mailbox.session("joiner"), "client": "test", "pid": os.getpid()}
    ) as joiner:
        with pytest.raises(NotFound, match="ensure_project"):
            joiner.call_tool("macro_prepare_thread", {"project_key": "/nowhere", "thread_id": "T-1",
                                                      "program": "p", "model": "m"})
        with pytest.raises(InvalidArgument, match="agent_name is required"):
            joiner.call_tool("macro_prepare_thread", {"project_key": project, "thread_id": "T-1", "program": "p",
                                                      "model": "m", "register_if_missing": False})
        joined = joiner.call_tool("macro_prepare_thread", {"project_key": project, "thread_id": "T-1",
                                                           "program": "p", "model": "m", "agent_name": "Joiner"})
        assert joined["agent"]["name"] == "Joiner"
        assert joined["thread"]["total_messages"] == 0
        writer.call_tool("send_message", {"project_key": project, "to": "Joiner", "thread_id": "T-1",
                                          "subject": "Plan", "body_md": "- [ ] run the `src/db/migrate.py` step"})
        again = joiner.call_tool("macro_prepare_thread", {"project_key": project, "thread_id": "T-1",
                                                          "program": "p", "model": "m", "register_if_missing": False})
        assert again["agent"]["name"] == "Joiner"
        assert again["unread_count"] == 1
        assert [m["subject"] for m in again["inbox"]] == ["Plan"]
        assert "body_md" not in again["inbox"][0]
        thread = again["thread"]
        assert thread["thread_id"] == "T-1"
        assert thread["total_messages"] == 1
        assert thread["summary"]["participants"] == ["Writer"]
        assert thread["summary"]["open_actions"] == 1
        assert thread["examples"][0]["subject"] == "Plan"


LONG_AGO = "2020-01-01T00:00:00.000000Z"
LONG_AGO_EPOCH = 1577836800


def write_config(mailbox: Mailbox, **values: float) -> None:
    """Settings for the daemon the first client call will start (config.toml in the state dir)."""
    mailbox.paths.state_dir.mkdir(parents=True, exist_ok=True)
    (mailbox.paths.state_dir / "config.toml").write_text("".join(f"{k} = {v}\n" for k, v in values.items()))


def db_execute(mailbox: Mailbox, sql: str, *params: Any) -> list[Any]:
    db = apsw.Connection(str(mailbox.paths.db))
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def git(repo: Path, *args: str, **env: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                   check=True, capture_output=True, env={**os.environ, **env})


def force_release(conn: DaemonClient, mailbox: Mailbox, rid: int, **extra: Any) -> dict[str, Any]:
    return conn.call_tool("force_release_file_reservation",  # type: ignore[no-any-return]
                          {"project_key": str(mailbox.root), "file_reservation_id": rid, **extra})


def active_reasons(conn: DaemonClient, mailbox: Mailbox, rid: int) -> list[str]:
    with pytest.raises(ReservationActive.__mro__[1]) as caught:
        force_release(conn, mailbox, rid)
    assert caught.value.code == "RESERVATION_ACTIVE"
    return list(caught.value.data["stale_reasons"])


def test_force_release_waits_until_mail_file_and_git_activity_are_older_than_the_grace(mailbox: Mailbox) -> None:
    repo = mailbox.root
    legacy = repo / "src" / "legacy"
    legacy.mkdir(parents=True)
    (legacy / "a.py").write_text("a\n")
    git(repo, "add", "src/legacy/a.py")
    git(repo, "commit", "-qm", "old work", GIT_AUTHOR_DATE=LONG_AGO, GIT_COMMITTER_DATE=LONG_AGO)
    os.utime(legacy / "a.py", (LONG_AGO_EPOCH, LONG_AGO_EPOCH))
    blue, green = agent(mailbox, "BlueLake"), agent(mailbox, "GreenCastle")
    rid = reserve(blue, mailbox, ["src/legacy/**"])["granted"][0]["id"]
    blue.call_tool("send_message", {"project_key": str(repo), "to": "GreenCastle", "subject": "on it",
                                    "body_md": "working on legacy"})
    blue.close()
    db_execute(mailbox, "UPDATE agents SET last_active_ts = ? WHERE name = 'BlueLake'", LONG_AGO)

    assert active_reasons(green, mailbox, rid) == ["recent_mail_activity"]
    db_execute(mailbox, "UPDATE messages SET created_ts = ?", LONG_AGO)

    (legacy / "b.py").write_text("b\n")
    assert active_reasons(green, mailbox, rid) == ["recent_filesystem_activity"]
    os.utime(legacy / "b.py", (LONG_AGO_EPOCH, LONG_AGO_EPOCH))

    git(repo, "add", "src/legacy/b.py")
    git(repo, "commit", "-qm", "fresh work")  # a commit touching the reserved paths, just now
    assert active_reasons(green, mailbox, rid) == ["recent_git_activity"]
    git(repo, "commit", "-q", "--amend", "--no-edit", GIT_AUTHOR_DATE=LONG_AGO, GIT_COMMITTER_DATE=LONG_AGO)

    result = force_release(green, mailbox, rid, note="taking over legacy")
    assert result["released"] == 1
    reservation = result["reservation"]
    assert reservation["last_git_activity_ts"] is None
    assert reservation["last_filesystem_activity_ts"].startswith("2020-01-01")
    assert reservation["last_mail_activity_ts"] == LONG_AGO
    with agent(mailbox, "BlueLake") as blue_again:
        [note] = blue_again.call_tool("fetch_inbox", {"project_key": str(repo), "include_bodies": True})["result"]
        assert "last commit touching it" in note["body_md"]
    green.close()


def test_inactivity_and_grace_come_from_the_settings(fresh_mailbox: Mailbox) -> None:
    mailbox = fresh_mailbox
    write_config(mailbox, reservation_inactivity_seconds=0, reservation_activity_grace_seconds=0)
    blue, green = agent(mailbox, "BlueLake"), agent(mailbox, "GreenCastle")
    rid = reserve(blue, mailbox, ["docs/**"])["granted"][0]["id"]
    (mailbox.root / "docs").mkdir()
    (mailbox.root / "docs" / "x.md").write_text("fresh")
    # With both thresholds at zero even a holder active this instant counts as stale.
    assert force_release(green, mailbox, rid, notify_previous=False)["released"] == 1
    blue.close()
    green.close()


def test_the_background_sweep_releases_expired_reservations_without_any_read(fresh_mailbox: Mailbox) -> None:
    mailbox = fresh_mailbox
    write_config(mailbox, reservation_sweep_seconds=0.1)
    with agent(mailbox, "BlueLake") as blue:
        rid = reserve(blue, mailbox, ["src/**"])["granted"][0]["id"]
    db_execute(mailbox, "UPDATE file_reservations SET expires_ts = ? WHERE id = ?", LONG_AGO, rid)
    deadline = time.monotonic() + 30
    while True:  # bounded poll of the database itself: no tool call, so no cleanup-on-read
        [(released,)] = db_execute(mailbox, "SELECT released_ts FROM file_reservations WHERE id = ?", rid)
        if released is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert released == LONG_AGO, "the sweep records the expiry as the release time"


INDEXED = ["src/**", "src/auth/*.py", "src/auth/", "*.py", "docs/", "**", "tool://deploy", "/lib/x.py",
           "lib/**/test_*.py", "*/build/**", "README", "src/[ab].py"]
PROBES = ["src/auth/login.py", "src/x/**", "lib/a/test_b.py", "*.md", "tool://deploy", "a/build/z", "README",
          "**", "docs/a/b", "src/b.py", "other/"]


def test_the_pattern_index_finds_exactly_the_patterns_a_pairwise_check_would() -> None:
    index = PatternIndex([(p, p) for p in INDEXED])
    for probe in PROBES:
        assert sorted(map(str, index.overlapping(probe))) == sorted(p for p in INDEXED if overlaps(p, probe)), probe
    updated = index.updated([("src/auth/*.py", "refreshed"), ("docs/new.md", "new")], ["README"],
                            lambda tag: tag not in ("src/auth/*.py", "README"))
    assert updated.overlapping("README") == ["**"], "README was dropped"
    expected = ["*.py", "**", "refreshed", "src/**", "src/auth/"]
    assert sorted(map(str, updated.overlapping("src/auth/a.py"))) == sorted(expected)
    assert "new" in updated.overlapping("docs/**")
    assert "new" not in index.overlapping("docs/**"), "the original index is unchanged"


def test_refreshing_ones_own_reservation_replaces_it_for_later_conflict_checks(mailbox: Mailbox) -> None:
    blue, green = agent(mailbox, "BlueLake"), agent(mailbox, "GreenCastle")
    reserve(blue, mailbox, ["src/a.py"])
    assert reserve(green, mailbox, ["src/a.py"], exclusive=False, fail_on_conflict=True)["refused"]
    reserve(blue, mailbox, ["src/a.py"], exclusive=False)  # the same pattern again: now shared
    shared = reserve(green, mailbox, ["src/a.py"], exclusive=False, fail_on_conflict=True)
    assert len(shared["granted"]) == 1
    assert shared["conflicts"] == []
    assert reserve(green, mailbox, ["src/a.py"], fail_on_conflict=True)["refused"], "exclusive vs shared"
    blue.call_tool("release_file_reservations", {"project_key": str(mailbox.root)})
    assert reserve(green, mailbox, ["src/a.py"], fail_on_conflict=True)["granted"], "released holders never conflict"
    blue.close()
    green.close()
