"""Search and summary tools through a real daemon on both backends, and `mailctl search` / `thread`.

Mail is seeded as rows in the daemon's database (tests/mailrows.py) until messaging lands.
"""

from __future__ import annotations

import json
from typing import Any

import apsw
import pytest

from maild.services.projects import slugify
from shared.errors import InvalidArgument, NotFound
from tests.conftest import Mailbox
from tests.mailrows import insert_agent, insert_message, insert_project, ts

pytestmark = pytest.mark.slow

LLM_REPLY = json.dumps({"overview": "The deploy is planned.", "key_points": ["deploy on Friday"]})


def seed(box: Mailbox) -> dict[str, int]:
    """Start the daemon (it creates the schema), then write rows beside it and bind a session."""
    box.call("health_check")
    conn = apsw.Connection(str(box.paths.db))
    conn.set_busy_timeout(5000)
    try:
        with conn:
            project = insert_project(conn, slugify(str(box.root)), str(box.root))
            blue, green, red = (insert_agent(conn, project, n) for n in ("BlueLake", "GreenHill", "RedFox"))
            ids = {
                "plan": insert_message(conn, project, blue, "Deploy plan", "- deploy on Friday\n- [ ] tag POL-358",
                                       to=(green,), thread_id="OPS-1", importance="high", created_ts=ts(1)),
                "reply": insert_message(conn, project, green, "Re: Deploy plan", "ok, @BlueLake `ops/deploy.md`",
                                        to=(blue,), thread_id="OPS-1", created_ts=ts(2)),
                "private": insert_message(conn, project, red, "Deploy secrets", "only for BlueLake",
                                          to=(blue,), importance="urgent", created_ts=ts(3)),
            }
            conn.execute(
                "INSERT INTO sessions(id, agent_id, client, created_ts, last_seen_ts) VALUES (?, ?, 'test', ?, ?)",
                ("green-session", green, ts(0), ts(0)),
            )
    finally:
        conn.close()
    return ids


def call_as(box: Mailbox, session: str, tool: str, **arguments: Any) -> Any:
    with box.client(hello={"session": session, "client": "test"}) as conn:
        return conn.call_tool(tool, arguments)


def test_search_tools_rank_snippet_filter_and_survive_hostile_queries(mailbox: Mailbox) -> None:
    ids = seed(mailbox)
    key = str(mailbox.root)
    found = mailbox.call("search_mailbox", project_key=key, query="deploy")["result"]
    assert {m["id"] for m in found} == set(ids.values())
    scores = [m["relevance_score"] for m in found]
    assert scores == sorted(scores, reverse=True)
    assert any("<mark>" in m["subject_snippet"] for m in found)
    headers = mailbox.call("search_messages", project_key=key, query="POL-358")["result"]
    assert [h["id"] for h in headers] == [ids["plan"]]
    assert "body_md" not in headers[0]
    assert "<mark>POL-358</mark>" in headers[0]["snippet"]
    urgent = mailbox.call("search_mailbox", project_key=key, query="deploy", importance=["urgent"])["result"]
    assert [m["id"] for m in urgent] == [ids["private"]]
    newest = mailbox.call("search_messages", project_key=key, query="deploy", order="newest",
                          since_ts="2026-01-01T09:02:00Z")["result"]
    assert [m["id"] for m in newest] == [ids["private"], ids["reply"]]
    for hostile in ['"', "*", "(", "NOT", "a OR", "🚀--", "\\"]:
        assert isinstance(mailbox.call("search_mailbox", project_key=key, query=hostile)["result"], list)
    with pytest.raises(InvalidArgument, match="importance"):
        mailbox.call("search_mailbox", project_key=key, query="deploy", importance="critical")
    with pytest.raises(InvalidArgument, match="since_ts"):
        mailbox.call("search_mailbox", project_key=key, query="deploy", since_ts="yesterday")
    with pytest.raises(NotFound, match="agent_filter"):
        mailbox.call("search_mailbox", project_key=key, query="deploy", agent_filter="Nobody")


def test_in_participants_mode_a_bound_agent_finds_only_its_mail_but_the_operator_finds_all(
    mailbox: Mailbox,
) -> None:
    mailbox.paths.state_dir.mkdir(parents=True, exist_ok=True)
    (mailbox.paths.state_dir / "config.toml").write_text("message_visibility = 'participants'\n")
    ids = seed(mailbox)
    key = str(mailbox.root)
    mine = call_as(mailbox, "green-session", "search_mailbox", project_key=key, query="deploy")["result"]
    assert {m["id"] for m in mine} == {ids["plan"], ids["reply"]}
    # Naming another agent does not widen a bound session's view.
    spoof = call_as(mailbox, "green-session", "search_mailbox", project_key=key, query="secrets",
                    requesting_agent="BlueLake")["result"]
    assert spoof == []
    narrowed = mailbox.call("search_mailbox", project_key=key, query="deploy", requesting_agent="RedFox")["result"]
    assert [m["id"] for m in narrowed] == [ids["private"]]
    thread = call_as(mailbox, "green-session", "summarize_thread", project_key=key, thread_id=str(ids["private"]))
    assert thread["summary"]["total_messages"] == 0


def test_summaries_use_a_mocked_llm_and_report_its_cost_in_health_check(mailbox: Mailbox) -> None:
    mailbox.paths.state_dir.mkdir(parents=True, exist_ok=True)
    (mailbox.paths.state_dir / "config.toml").write_text(
        f"llm_enabled = true\nllm_default_model = 'openai/gpt-4o-mini'\nllm_mock_response = '''{LLM_REPLY}'''\n"
    )
    seed(mailbox)
    key = str(mailbox.root)
    result = mailbox.call("summarize_thread", project_key=key, thread_id="OPS-1", include_examples=True)
    summary = result["summary"]
    assert summary["llm_status"] == "ok"
    assert summary["overview"] == "The deploy is planned."
    assert summary["participants"] == ["BlueLake", "GreenHill"]
    assert summary["open_actions"] == 1
    assert summary["code_references"] == ["ops/deploy.md"]
    assert len(result["examples"]) == 2
    plain = mailbox.call("summarize_thread", project_key=key, thread_id="OPS-1", llm_mode=False)
    assert plain["summary"]["llm_status"] == "not_requested"
    many = mailbox.call("summarize_threads", project_key=key, thread_ids=["OPS-1"])
    assert many["aggregate"]["key_points"] == ["deploy on Friday"]
    llm = mailbox.call("health_check")["llm"]
    assert llm["enabled"] is True
    assert llm["calls"] == 2
    assert llm["cost_usd"] > 0


def test_mailctl_search_and_thread_print_for_people_and_json_for_scripts(mailbox: Mailbox) -> None:
    ids = seed(mailbox)
    people = mailbox.mailctl("search", "deploy AND friday").stdout
    assert f"#{ids['plan']}" in people
    assert "Friday" in people or "friday" in people
    assert "**" not in people, "piped output carries no highlight markup"
    assert "<mark>" not in people
    as_json = json.loads(mailbox.mailctl("search", "deploy", "--json", "--importance", "urgent").stdout)
    assert [m["id"] for m in as_json] == [ids["private"]]
    assert mailbox.mailctl("search", '"').stdout.strip() == "no matches"
    listing = mailbox.mailctl("thread", "OPS-1").stdout
    assert listing.index("  Deploy plan") < listing.index("  Re: Deploy plan")
    summary = mailbox.mailctl("thread", "OPS-1", "--summary").stdout
    assert "participants: BlueLake, GreenHill" in summary
    assert "llm: disabled" in summary
    data = json.loads(mailbox.mailctl("thread", "OPS-1", "--summary", "--json").stdout)
    assert data["summary"]["total_messages"] == 2
