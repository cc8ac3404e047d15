"""Thread summaries: the heuristic digest, and LLM refinement through litellm's mock_response."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from maild.services.summaries import LLM, Summaries, build_prompt, estimate_tokens, heuristic_summary
from maild.store import open_store
from shared.config import Settings, load_settings
from shared.errors import InvalidArgument, NotFound
from tests.mailrows import insert_agent, insert_message, insert_project, ts

PLAN = """Plan for the auth migration:

- move token storage to `src/auth/tokens.py`
- keep the old endpoint for a week
1. announce it to @GreenHill
2) update `docs/auth.md`

- [ ] write the migration
- [x] agree on the schema
TODO: ping @GreenHill about rollout

```python
- not a bullet, this is code `fake/path.py`
```
"""

REPLY = """Looks good. @GreenHill @RedFox please review.

- [ ] review `src/auth/tokens.py`
- [x] run `make test`
BLOCKED on CI quota
"""

LLM_REPLY = json.dumps({
    "overview": "BlueLake plans the auth migration; GreenHill reviews.",
    "key_points": ["Token storage moves to src/auth/tokens.py"],
    "action_items": ["[ ] write the migration"],
    "participants": [],  # empty: the heuristic list is kept
})


def thread_rows(conn: Any) -> dict[str, int]:
    project = insert_project(conn, "alpha")
    blue, green, red = (insert_agent(conn, project, n) for n in ("BlueLake", "GreenHill", "RedFox"))
    first = insert_message(conn, project, blue, "Auth migration", PLAN, to=(green,), thread_id="AUTH-1",
                           importance="high", created_ts=ts(1))
    insert_message(conn, project, green, "Re: Auth migration", REPLY, to=(blue,), thread_id="AUTH-1",
                   created_ts=ts(2))
    insert_message(conn, project, red, "Re: Auth migration", "- side note only RedFox and BlueLake see",
                   to=(blue,), thread_id="AUTH-1", created_ts=ts(3))
    for i in range(30):
        insert_message(conn, project, blue, f"Noise {i}", "filler text " * 80, to=(green,), thread_id="BIG",
                       importance="urgent" if i == 7 else "normal", created_ts=ts(10 + i))
    return {"project": project, "blue": blue, "green": green, "red": red, "first": first}


@asynccontextmanager
async def summaries(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[Summaries, dict[str, int]]]:
    config = Settings(**settings)
    async with open_store(tmp_path / "mail.db", config) as store:
        ids = await store.write(thread_rows)
        yield Summaries(store, config), ids


def llm(**extra: Any) -> dict[str, Any]:
    return {"llm_enabled": True, "llm_default_model": "openai/gpt-4o-mini", **extra}


def test_heuristics_find_points_actions_mentions_and_code_outside_code_fences() -> None:
    messages = [
        {"id": 1, "from": "BlueLake", "body_md": PLAN},
        {"id": 2, "from": "GreenHill", "body_md": REPLY},
        {"id": 3, "from": "BlueLake", "body_md": "thanks"},
    ]
    s = heuristic_summary(messages)
    assert s["participants"] == ["BlueLake", "GreenHill"]
    assert s["key_points"] == [
        "move token storage to `src/auth/tokens.py`",
        "keep the old endpoint for a week",
        "announce it to @GreenHill",
        "update `docs/auth.md`",
    ]
    assert s["action_items"] == [
        "- [ ] write the migration", "- [x] agree on the schema", "TODO: ping @GreenHill about rollout",
        "- [ ] review `src/auth/tokens.py`", "- [x] run `make test`", "BLOCKED on CI quota",
    ]
    assert (s["open_actions"], s["done_actions"]) == (2, 2)
    assert s["mentions"] == [{"name": "GreenHill", "count": 3}, {"name": "RedFox", "count": 1}]
    assert s["code_references"] == ["src/auth/tokens.py", "docs/auth.md"]  # not `make test`, not fenced code
    assert s["total_messages"] == 3


def test_the_prompt_respects_the_token_budget_and_picks_important_messages_first() -> None:
    messages = [
        {"id": i, "from": "A", "subject": f"s{i}", "body_md": "word " * 200, "created_ts": ts(i),
         "importance": "urgent" if i in (3, 17) else "normal"}
        for i in range(20)
    ]
    prompt = build_prompt("# Thread X", messages, budget=1200)
    assert prompt.tokens <= 1200
    assert estimate_tokens(prompt.text) <= prompt.tokens
    assert {3, 17} <= set(prompt.message_ids)
    assert len(prompt.message_ids) < 20
    assert prompt.message_ids == sorted(prompt.message_ids)  # shown in thread order
    newest_normal = max(i for i in prompt.message_ids if i not in (3, 17))
    assert newest_normal == 19
    assert build_prompt("# Thread X", messages, budget=50).message_ids == []


def test_llm_settings_use_upstream_names_and_are_off_by_default() -> None:
    assert load_settings(None, environ={}).llm_enabled is False
    assert load_settings(None, environ={}).llm_default_model == ""
    on = load_settings(None, environ={"LLM_ENABLED": "true", "LLM_DEFAULT_MODEL": "openai/gpt-4o-mini",
                                      "LLM_MAX_TOKENS": "256", "LLM_CACHE_ENABLED": "false"})
    assert (on.llm_enabled, on.llm_default_model, on.llm_max_tokens, on.llm_cache_enabled) == (
        True, "openai/gpt-4o-mini", 256, False)
    # Enabled without a model is still off: nothing is ever sent to a default provider.
    assert not LLM(load_settings(None, environ={"LLM_ENABLED": "1"})).configured


pytestmark = pytest.mark.anyio


async def test_without_an_llm_the_heuristic_summary_says_llm_disabled(tmp_path: Path) -> None:
    async with summaries(tmp_path) as (service, _):
        result = await service.summarize_thread("alpha", "AUTH-1", viewer=None, include_examples=True)
        summary = result["summary"]
        assert summary["llm_status"] == "disabled"
        assert summary["participants"] == ["BlueLake", "GreenHill", "RedFox"]
        assert summary["total_messages"] == 3
        assert [e["from"] for e in result["examples"]] == ["BlueLake", "GreenHill", "RedFox"]
        off = await service.summarize_thread("alpha", "AUTH-1", viewer=None, llm_mode=False)
        assert off["summary"]["llm_status"] == "not_requested"
        assert service.llm.statistics()["calls"] == 0


@pytest.mark.parametrize(("mode", "seen_by_green"), [
    ("participants", ["BlueLake", "GreenHill"]),
    ("project", ["BlueLake", "GreenHill", "RedFox"]),  # a project's agents read all its threads
])
async def test_a_thread_is_found_by_key_or_seed_id_and_respects_visibility(
    tmp_path: Path, mode: str, seen_by_green: list[str]
) -> None:
    async with summaries(tmp_path, message_visibility=mode) as (service, ids):
        by_seed = await service.summarize_thread("alpha", str(ids["first"]), viewer=None)
        assert by_seed["summary"]["total_messages"] == 1
        as_green = await service.summarize_thread("alpha", "AUTH-1", viewer=ids["green"])
        assert as_green["summary"]["participants"] == seen_by_green
        unknown = await service.summarize_thread("alpha", "nope", viewer=None)
        assert unknown["summary"]["total_messages"] == 0
        with pytest.raises(NotFound):
            await service.summarize_thread("nowhere", "AUTH-1", viewer=None)
        with pytest.raises(InvalidArgument, match="thread_id"):
            await service.summarize_thread("alpha", "  ", viewer=None)


async def test_an_llm_reply_refines_the_summary_is_cached_and_its_cost_is_counted(tmp_path: Path) -> None:
    async with summaries(tmp_path, **llm(llm_mock_response=LLM_REPLY)) as (service, _):
        result = await service.summarize_thread("alpha", "AUTH-1", viewer=None)
        summary = result["summary"]
        assert summary["llm_status"] == "ok"
        assert summary["llm_cached"] is False
        assert summary["overview"].startswith("BlueLake plans")
        assert summary["key_points"] == ["Token storage moves to src/auth/tokens.py"]
        assert summary["participants"] == ["BlueLake", "GreenHill", "RedFox"]  # empty LLM list ignored
        assert (summary["open_actions"], summary["done_actions"]) == (2, 2)  # counts stay heuristic
        again = await service.summarize_thread("alpha", "AUTH-1", viewer=None)
        assert again["summary"]["llm_cached"] is True
        stats = service.llm.statistics()
        assert stats["calls"] == 1
        assert stats["cache_hits"] == 1
        assert stats["prompt_tokens"] > 0
        assert stats["cost_usd"] > 0


async def test_the_llm_input_stays_within_the_budget(tmp_path: Path) -> None:
    async with summaries(tmp_path, **llm(llm_mock_response=LLM_REPLY, llm_input_token_budget=1500)) as (service, _):
        summary = (await service.summarize_thread("alpha", "BIG", viewer=None))["summary"]
        assert summary["llm_status"] == "ok"
        used = summary["llm_input"]
        assert used["tokens_estimate"] <= used["budget"] == 1500
        assert 0 < used["messages"] < used["of"] == 30


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ({"llm_mock_response": "this is not json"}, "bad_reply"),
        ({"llm_mock_response": "litellm.RateLimitError"}, "unavailable"),
        ({"llm_default_model": "no-such-provider/model"}, "unavailable"),
        ({"llm_mock_response": "litellm.Timeout", "llm_timeout_seconds": 0.05}, "timeout"),
    ],
)
async def test_an_unavailable_model_falls_back_to_the_heuristic_summary(
    tmp_path: Path, extra: dict[str, Any], status: str
) -> None:
    async with summaries(tmp_path, **llm(**extra)) as (service, _):
        summary = (await service.summarize_thread("alpha", "AUTH-1", viewer=None))["summary"]
        assert summary["llm_status"] == status
        assert summary["llm_error"]
        assert summary["participants"] == ["BlueLake", "GreenHill", "RedFox"]
        assert summary["key_points"][0] == "move token storage to `src/auth/tokens.py`"
        assert "overview" not in summary


async def test_several_threads_are_summarised_with_an_aggregate(tmp_path: Path) -> None:
    async with summaries(tmp_path, **llm(llm_mock_response=LLM_REPLY)) as (service, _):
        result = await service.summarize_threads("alpha", ["AUTH-1", "BIG", "AUTH-1"], viewer=None,
                                                 per_thread_limit=5)
        assert [t["thread_id"] for t in result["threads"]] == ["AUTH-1", "BIG"]
        assert result["threads"][1]["summary"]["total_messages"] == 5
        aggregate = result["aggregate"]
        assert aggregate["top_mentions"][0] == {"name": "GreenHill", "count": 3}
        assert aggregate["llm_status"] == "ok"
        assert aggregate["key_points"] == ["Token storage moves to src/auth/tokens.py"]
        with pytest.raises(InvalidArgument):
            await service.summarize_threads("alpha", [], viewer=None)
