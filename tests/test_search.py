"""Search service over a real store: ranking, snippets, filters, privacy, and hostile queries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maild.services.search import Search, SearchFilters, run_search, sanitize_query
from maild.services.visibility import Viewer
from maild.store import Store, open_store
from maild.store.migrations import apply_migrations
from shared.config import Settings
from shared.errors import InvalidArgument, NotFound
from tests.mailrows import insert_agent, insert_message, insert_project, ts


@dataclass
class Corpus:
    store: Store
    search: Search
    agents: dict[str, int]
    msgs: dict[str, int]

    async def ids(self, query: str, viewer: str | None = None, **kwargs: Any) -> list[int]:
        found = await self.find(query, viewer, **kwargs)
        return [m["id"] for m in found]

    async def find(self, query: str, viewer: str | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        who = None if viewer is None else self.agents[viewer]
        return await self.search.search("alpha", query, viewer=who, **kwargs)

    def names(self, ids: list[int]) -> set[str]:
        by_id = {v: k for k, v in self.msgs.items()}
        return {by_id[i] for i in ids}


def build(conn: Any) -> tuple[dict[str, int], dict[str, int]]:
    alpha, beta = insert_project(conn, "alpha"), insert_project(conn, "beta")
    a = {name: insert_agent(conn, alpha, name) for name in ("BlueLake", "GreenHill", "RedFox", "GreyOwl")}
    a["Stranger"] = insert_agent(conn, beta, "Stranger")
    blue, green, red, grey = a["BlueLake"], a["GreenHill"], a["RedFox"], a["GreyOwl"]
    m = {
        "plan": insert_message(conn, alpha, blue, "Deploy plan for auth service",
                               "We migrate the auth tokens tomorrow. Ticket POL-358 tracks it.",
                               to=(green,), thread_id="T1", importance="high", created_ts=ts(1)),
        "reply": insert_message(conn, alpha, green, "Re: Deploy plan",
                                "Looks good; deploy after the build test passes.",
                                to=(blue,), thread_id="T1", created_ts=ts(2)),
        "lunch": insert_message(conn, alpha, red, "Lunch", "Pizza or sushi? Not about deploy at all.",
                                to=(blue,), cc=(green,), created_ts=ts(3)),
        "secret": insert_message(conn, alpha, red, "Secret deploy notes", "Only for GreyOwl: auth rotation.",
                                 to=(grey,), bcc=(green,), importance="urgent", created_ts=ts(4)),
        "status": insert_message(conn, alpha, blue, "Weekly status", "authentication works; authorization pending",
                                 to=(green,), importance="low", created_ts=ts(5)),
        "beta": insert_message(conn, beta, a["Stranger"], "deploy in beta", "deploy deploy", created_ts=ts(6)),
        "blind": insert_message(conn, alpha, red, "Blind rotation drill", "only blind copies", bcc=(grey,),
                                created_ts=ts(7)),
    }
    return a, m


@asynccontextmanager
async def corpus(tmp_path: Path, rank_window: int = 5000, mode: str = "project") -> AsyncIterator[Corpus]:
    async with open_store(tmp_path / "mail.db", Settings()) as store:
        agents, msgs = await store.write(build)
        yield Corpus(store, Search(store, rank_window, mode), agents, msgs)


pytestmark = pytest.mark.anyio


async def test_subject_hits_outrank_body_hits_and_scores_fall_with_rank(tmp_path: Path) -> None:
    async with corpus(tmp_path) as c:
        found = await c.find("deploy")
        order = [m["id"] for m in found]
        assert c.names(order) == {"plan", "reply", "lunch", "secret"}
        assert order[-1] == c.msgs["lunch"]  # the only body-only hit
        scores = [m["relevance_score"] for m in found]
        assert scores == sorted(scores, reverse=True)
        assert all(0 < s < 1 for s in scores)


async def test_results_carry_mark_snippets_and_full_messages(tmp_path: Path) -> None:
    async with corpus(tmp_path) as c:
        (hit,) = await c.find("tokens")
        assert hit["body_snippet"].count("<mark>tokens</mark>") == 1
        assert hit["subject_snippet"] == "Deploy plan for auth service"
        assert hit["from"] == "BlueLake"
        assert hit["to"] == ["GreenHill"]
        assert hit["thread_id"] == "T1"
        assert hit["body_md"].startswith("We migrate")
        (bare,) = await c.find("tokens", include_bodies=False)
        assert "body_md" not in bare


async def test_prefix_queries_get_marked_snippets_too(tmp_path: Path) -> None:
    async with corpus(tmp_path) as c:
        (hit,) = await c.find("authen*")
        assert hit["body_snippet"] == "<mark>authentication</mark> works; authorization pending"
        (bare,) = await c.find("authen*", include_bodies=False)
        assert bare["body_snippet"] == hit["body_snippet"]
        (plan,) = await c.find("migr* tokens")
        assert "<mark>migrate</mark>" in plan["body_snippet"]
        assert "<mark>tokens</mark>" in plan["body_snippet"]


async def test_fts5_syntax_works_phrases_prefixes_and_boolean_operators(tmp_path: Path) -> None:
    async with corpus(tmp_path) as c:
        assert c.names(await c.ids("auth*")) == {"plan", "secret", "status"}
        assert c.names(await c.ids('"build test"')) == {"reply"}
        assert await c.ids('"test build"') == []
        assert c.names(await c.ids("pizza OR tokens")) == {"lunch", "plan"}
        assert c.names(await c.ids("deploy NOT pizza")) == {"plan", "reply", "secret"}
        assert c.names(await c.ids("deploy AND (tokens OR rotation)")) == {"plan", "secret"}
        assert c.names(await c.ids("subject:deploy")) == {"plan", "reply", "secret"}
        assert c.names(await c.ids("POL-358")) == {"plan"}
        assert c.names(await c.ids("pol-358")) == {"plan"}


@pytest.mark.parametrize(
    "query",
    ["*", "**", '"', '"deploy', 'deploy"', "(", ")", "(()", "AND", "OR OR", "NOT deploy", "deploy NOT",
     "...", "?", "-", "--", ":", "subject:", "NEAR(", "{", "}", "^", "\x00", "'", "deploy -pizza", "🚀", ""],
)
async def test_hostile_queries_give_a_sane_result_and_never_an_exception(tmp_path: Path, query: str) -> None:
    async with corpus(tmp_path) as c:
        found = await c.ids(query)
        assert isinstance(found, list)


async def test_unsearchable_input_finds_nothing_and_unbalanced_quotes_still_search(tmp_path: Path) -> None:
    async with corpus(tmp_path) as c:
        assert await c.ids("*") == []
        assert await c.ids("...") == []
        assert c.names(await c.ids('"build test')) == {"reply"}


async def test_filters_by_agent_time_importance_and_thread(tmp_path: Path) -> None:
    async with corpus(tmp_path) as c:
        def f(**kw: Any) -> dict[str, Any]:
            return {"filters": SearchFilters(**kw)}

        assert c.names(await c.ids("deploy", **f(agent="redfox"))) == {"lunch", "secret"}
        assert c.names(await c.ids("deploy", **f(agent="GreyOwl"))) == {"secret"}  # as a recipient
        assert c.names(await c.ids("deploy", **f(since_ts=ts(2), until_ts=ts(3)))) == {"reply", "lunch"}
        assert c.names(await c.ids("deploy", **f(importance=("high", "urgent")))) == {"plan", "secret"}
        assert c.names(await c.ids("deploy", **f(thread_id="T1"))) == {"plan", "reply"}
        seed = str(c.msgs["lunch"])
        assert c.names(await c.ids("deploy", **f(thread_id=seed))) == {"lunch"}
        with pytest.raises(NotFound) as err:
            await c.ids("deploy", **f(agent="Nobody"))
        assert err.value.data["type"] == "agent_filter_not_found"


async def test_in_participants_mode_an_agent_finds_only_mail_it_sent_or_received(tmp_path: Path) -> None:
    async with corpus(tmp_path, mode="participants") as c:
        assert c.names(await c.ids("deploy")) == {"plan", "reply", "lunch", "secret"}
        assert c.names(await c.ids("deploy", "BlueLake")) == {"plan", "reply", "lunch"}
        assert c.names(await c.ids("deploy", "GreyOwl")) == {"secret"}
        (seen_by_bcc,) = await c.find("auth rotation", "GreenHill")
        assert seen_by_bcc["bcc"] == ["GreenHill"]  # a blind copy sees itself, and no other blind copy
        (seen_by_sender,) = await c.find("auth rotation", "RedFox")
        assert seen_by_sender["bcc"] == ["GreenHill"]
        # A filter cannot widen what an agent may see.
        assert await c.ids("auth rotation", "BlueLake", filters=SearchFilters(agent="GreyOwl")) == []
        assert await c.ids("deploy", "Stranger") == []  # another project: nothing it took part in


async def test_in_project_mode_every_agent_of_the_project_finds_its_mail_but_not_blind_only_mail(
    tmp_path: Path,
) -> None:
    async with corpus(tmp_path) as c:
        everything = {"plan", "reply", "lunch", "secret"}
        for agent in ("BlueLake", "GreenHill", "RedFox", "GreyOwl"):
            assert c.names(await c.ids("deploy", agent)) == everything
        (seen_by_other,) = await c.find("auth rotation", "BlueLake")
        assert seen_by_other["bcc"] == []  # blind copies stay blind to everyone else
        (seen_by_bcc,) = await c.find("auth rotation", "GreenHill")
        assert seen_by_bcc["bcc"] == ["GreenHill"]
        # Mail sent only to blind copies stays with its sender and those recipients.
        assert await c.ids("rotation drill", "BlueLake") == []
        assert c.names(await c.ids("rotation drill", "GreyOwl")) == {"blind"}
        assert c.names(await c.ids("rotation drill", "RedFox")) == {"blind"}
        assert c.names(await c.ids("rotation drill")) == {"blind"}  # the operator
        # Another project's agent reads only what it took part in here.
        assert await c.ids("deploy", "Stranger") == []


async def test_the_index_follows_edits_and_deletes_in_the_same_transaction(tmp_path: Path) -> None:
    async with corpus(tmp_path) as c:
        lunch = c.msgs["lunch"]

        def edit(conn: Any) -> None:
            conn.execute("UPDATE messages SET subject = 'Dinner', body_md = 'ramen tonight' WHERE id = ?", (lunch,))

        await c.store.write(edit)
        assert await c.ids("pizza") == []
        assert await c.ids("ramen") == [lunch]

        def delete(conn: Any) -> None:
            conn.execute("DELETE FROM message_recipients WHERE message_id = ?", (lunch,))
            conn.execute("DELETE FROM messages WHERE id = ?", (lunch,))

        await c.store.write(delete)
        assert await c.ids("ramen") == []

        def new_mail(conn: Any) -> int:
            return insert_message(conn, 1, c.agents["BlueLake"], "Fresh", "brand new words", created_ts=ts(9))

        fresh = await c.store.write(new_mail)
        assert await c.ids("brand new") == [fresh]


async def test_search_is_scoped_to_the_project(tmp_path: Path) -> None:
    async with corpus(tmp_path) as c:
        assert c.msgs["beta"] not in await c.ids("deploy")
        beta = await c.search.search("beta", "deploy", viewer=None)
        assert [m["id"] for m in beta] == [c.msgs["beta"]]
        with pytest.raises(NotFound, match="ensure_project"):
            await c.search.search("nowhere", "deploy", viewer=None)


async def test_bad_filter_values_are_rejected_with_what_to_send(tmp_path: Path) -> None:
    async with corpus(tmp_path) as c:
        with pytest.raises(InvalidArgument, match="order"):
            await c.ids("deploy", order="random")


async def test_newest_order_and_the_rank_window_bound_the_work(tmp_path: Path) -> None:
    async with corpus(tmp_path, rank_window=2, mode="participants") as c:
        newest = await c.ids("deploy", order="newest")
        assert newest == [c.msgs["secret"], c.msgs["lunch"], c.msgs["reply"], c.msgs["plan"]]
        # Only the newest two matches (one is in another project) are ranked when the window is 2...
        assert (await c.ids("deploy", limit=1)) == [c.msgs["secret"]]
        # ...and the window widens when filters leave fewer than `limit` results.
        assert c.names(await c.ids("deploy")) == {"plan", "reply", "lunch", "secret"}
        assert c.names(await c.ids("deploy", "BlueLake", limit=2)) <= {"plan", "reply", "lunch"}
        assert len(await c.ids("deploy", "BlueLake", limit=2)) == 2


# -- fuzz: whatever the input, the sanitised expression is valid FTS5 ---------------------------

_PIECES = st.sampled_from(['"', "*", "(", ")", "AND", "OR", "NOT", "NEAR", ":", "-", "subject:", "^", "+", " ",
                           "deploy", "auth", "é", "_", "'", "{", "}", ",", "\\", "\t", "\n"])
_HOSTILE = st.one_of(st.text(max_size=60), st.lists(_PIECES, max_size=25).map("".join))

_FUZZ_DB = apsw.Connection(":memory:")
apply_migrations(_FUZZ_DB, ":memory:", ts(0))
with _FUZZ_DB:
    _PROJECT = insert_project(_FUZZ_DB, "fuzz")
    _AGENT = insert_agent(_FUZZ_DB, _PROJECT, "Fuzzy")
    insert_message(_FUZZ_DB, _PROJECT, _AGENT, "deploy auth", "café _ deploy (x) AND y", created_ts=ts(0))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # a sync test; run it once
@settings(max_examples=600, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=_HOSTILE)
def test_fuzz_no_query_string_makes_fts5_raise(query: str, anyio_backend: str) -> None:
    expr = sanitize_query(query)
    if expr is None:
        return
    for order in ("relevance", "newest"):
        run_search(_FUZZ_DB, project_id=_PROJECT, expr=expr, viewer=Viewer(), filters=SearchFilters(), limit=20,
                   order=order, window=100, include_bodies=True)
