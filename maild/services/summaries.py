"""Thread summaries: a heuristic digest always, refined by an LLM (llm.py) only when configured.

Owns: reading a thread as the caller may see it (visibility.py), extracting participants, key
points, action items, mentions and code references from its markdown, and merging the model's
answer, falling back to the heuristic result with a clear `llm_status` whenever it cannot answer.
Does not: store summaries, or talk to litellm itself.
"""

from __future__ import annotations

import collections
import re
from typing import Any

from maild.services import visibility
from maild.services.llm import LLM, MAX_LIST, build_prompt, estimate_tokens, merge_reply
from maild.services.projects import find_in, validate_project_key
from maild.services.search import load_messages
from maild.services.visibility import Viewer
from maild.store import Connection, Store
from shared.config import Settings
from shared.errors import InvalidArgument

__all__ = ["LLM", "Summaries", "build_prompt", "estimate_tokens", "heuristic_summary"]

MAX_THREADS = 100
LLM_THREADS_REFINED = 8

_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(?P<text>.+)$")
_CHECKBOX = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\[(?P<mark>[ xX])\]\s*(?P<text>.*)$")
_ACTION_WORD = re.compile(r"\b(?:TODO|ACTION|FIXME|NEXT|BLOCKED)\b")
_MENTION = re.compile(r"(?<![\w.@])@(?P<name>[A-Za-z][\w-]{0,63})")
_CODE_SPAN = re.compile(r"`(?P<code>[^`\n]{1,120})`")
_CODE_HINTS = ("/", ".py", ".ts", ".md")


# ---------------------------------------------------------------------------------------------
# Heuristics


def _content_lines(body: str) -> list[str]:
    """Body lines outside fenced code blocks (a bullet inside a code sample is not a key point)."""
    lines, fenced = [], False
    for line in body.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def heuristic_summary(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The digest upstream computes, from messages oldest first (each with `from` and `body_md`)."""
    participants: list[str] = []
    key_points: list[str] = []
    action_items: list[str] = []
    open_actions = done_actions = 0
    mentions: collections.Counter[str] = collections.Counter()
    code_refs: list[str] = []
    for message in messages:
        if message["from"] not in participants:
            participants.append(message["from"])
        lines = _content_lines(message.get("body_md") or "")
        body = "\n".join(lines)
        for line in lines:
            checkbox = _CHECKBOX.match(line)
            if checkbox:
                if checkbox["mark"] == " ":
                    open_actions += 1
                else:
                    done_actions += 1
                if len(action_items) < MAX_LIST:
                    action_items.append(line.strip())
                continue
            if _ACTION_WORD.search(line):
                if len(action_items) < MAX_LIST:
                    action_items.append(line.strip())
                continue
            bullet = _BULLET.match(line)
            if bullet and len(key_points) < MAX_LIST:
                key_points.append(bullet["text"].strip())
        mentions.update(m["name"] for m in _MENTION.finditer(body))
        for span in _CODE_SPAN.finditer(body):
            code = span["code"].strip()
            if code and any(h in code for h in _CODE_HINTS) and code not in code_refs and len(code_refs) < MAX_LIST:
                code_refs.append(code)
    return {
        "participants": participants,
        "key_points": key_points,
        "action_items": action_items,
        "open_actions": open_actions,
        "done_actions": done_actions,
        "mentions": [{"name": name, "count": count} for name, count in mentions.most_common(MAX_LIST)],
        "code_references": code_refs,
        "total_messages": len(messages),
    }


# ---------------------------------------------------------------------------------------------
# The service


def _thread_rows(conn: Connection, project_id: int, thread_id: str, viewer: Viewer, limit: int) -> list[int]:
    params: dict[str, Any] = {"project": project_id, "thread": thread_id, "limit": limit}
    match = "m.thread_id = :thread"
    if thread_id.isdigit():
        params["seed"] = int(thread_id)
        match = "(m.thread_id = :thread OR m.id = :seed)"
    visible = visibility.clause(viewer, params, project_id=project_id)
    return [
        row[0]
        for row in conn.execute(
            f"SELECT m.id FROM messages m WHERE m.project_id = :project AND {match} AND {visible}"
            " ORDER BY m.created_ts, m.id LIMIT :limit",
            params,
        )
    ]


def _validate_thread_id(thread_id: object) -> str:
    if not isinstance(thread_id, str) or not thread_id.strip():
        raise InvalidArgument("thread_id must be a non-empty string: a thread key or the id of its first message")
    return thread_id.strip()


class Summaries:
    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self.settings = settings
        self.llm = LLM(settings)

    async def thread_messages(
        self, project_key: str, thread_id: str, *, viewer: int | None, limit: int = 500, include_bodies: bool = True
    ) -> list[dict[str, Any]]:
        """The thread's messages visible to `viewer`, oldest first (seed id or thread key)."""
        key = validate_project_key(project_key)
        thread = _validate_thread_id(thread_id)

        def unit(conn: Connection) -> list[dict[str, Any]]:
            project = find_in(conn, key)
            reader = visibility.viewer_of(conn, viewer, self.settings.message_visibility)
            ids = _thread_rows(conn, project["id"], thread, reader, max(1, limit))
            found = load_messages(conn, ids, reader, include_bodies=include_bodies)
            return [found[i] for i in ids if i in found]

        return await self._store.read(unit)

    def _llm_plan(self, llm_mode: bool, llm_model: str | None) -> tuple[str | None, str | None]:
        """(model, None) when the LLM should be asked, else (None, the llm_status to report)."""
        if not llm_mode:
            return None, "not_requested"
        if not self.llm.configured:
            return None, "disabled"
        return self.llm.model_for(llm_model), None

    async def _refine(self, summary: dict[str, Any], header: str, messages: list[dict[str, Any]],
                      model: str) -> dict[str, Any]:
        prompt = build_prompt(header, messages, self.settings.llm_input_token_budget)
        summary["llm_model"] = model
        summary["llm_input"] = {
            "messages": len(prompt.message_ids),
            "of": len(messages),
            "tokens_estimate": prompt.tokens,
            "budget": prompt.budget,
        }
        if not prompt.message_ids:
            summary["llm_status"] = "skipped"
            summary["llm_error"] = "no message fits the LLM input budget (LLM_INPUT_TOKEN_BUDGET)"
            return summary
        result = await self.llm.complete(model, prompt.text)
        if result.status != "ok" or result.reply is None:
            summary["llm_status"] = result.status
            summary["llm_error"] = result.error
            return summary
        merged = merge_reply(summary, result.reply)
        merged["llm_status"] = "ok"
        merged["llm_cached"] = result.cached
        return merged

    async def summarize_thread(
        self,
        project_key: str,
        thread_id: str,
        *,
        viewer: int | None,
        include_examples: bool = False,
        llm_mode: bool = True,
        llm_model: str | None = None,
        limit: int = 500,
    ) -> dict[str, Any]:
        thread = _validate_thread_id(thread_id)
        messages = await self.thread_messages(project_key, thread, viewer=viewer, limit=limit)
        summary = heuristic_summary(messages)
        model, status = self._llm_plan(llm_mode, llm_model)
        if model is None or not messages:
            summary["llm_status"] = status or "skipped"
        else:
            summary = await self._refine(summary, f"# Thread {thread}", messages, model)
        result: dict[str, Any] = {"thread_id": thread, "summary": summary}
        if include_examples:
            result["examples"] = [
                {"id": m["id"], "subject": m["subject"], "from": m["from"], "created_ts": m["created_ts"]}
                for m in messages[:3]
            ]
        return result

    async def summarize_threads(
        self,
        project_key: str,
        thread_ids: list[str],
        *,
        viewer: int | None,
        llm_mode: bool = True,
        llm_model: str | None = None,
        per_thread_limit: int = 50,
    ) -> dict[str, Any]:
        if not thread_ids:
            raise InvalidArgument("thread_ids must list at least one thread key or seed message id")
        if len(thread_ids) > MAX_THREADS:
            raise InvalidArgument(f"at most {MAX_THREADS} threads per call; got {len(thread_ids)}")
        per_thread_limit = max(1, min(int(per_thread_limit), 500))
        threads: list[dict[str, Any]] = []
        collected: list[list[dict[str, Any]]] = []
        for thread_id in dict.fromkeys(_validate_thread_id(t) for t in thread_ids):
            messages = await self.thread_messages(project_key, thread_id, viewer=viewer, limit=per_thread_limit)
            collected.append(messages)
            threads.append({"thread_id": thread_id, "summary": heuristic_summary(messages)})
        mentions: collections.Counter[str] = collections.Counter()
        aggregate: dict[str, Any] = {"top_mentions": [], "action_items": [], "key_points": []}
        for item in threads:
            s = item["summary"]
            mentions.update({m["name"]: m["count"] for m in s["mentions"]})
            aggregate["action_items"].extend(s["action_items"])
            aggregate["key_points"].extend(s["key_points"])
        aggregate["action_items"] = aggregate["action_items"][:25]
        aggregate["key_points"] = aggregate["key_points"][:25]
        aggregate["top_mentions"] = [{"name": n, "count": c} for n, c in mentions.most_common(MAX_LIST)]
        model, status = self._llm_plan(llm_mode, llm_model)
        refined = [m for msgs in collected[:LLM_THREADS_REFINED] for m in msgs]
        if model is None or not refined:
            aggregate["llm_status"] = status or "skipped"
        else:
            header = "# Threads " + ", ".join(t["thread_id"] for t in threads[:LLM_THREADS_REFINED])
            aggregate = await self._refine(aggregate, header, refined, model)
        return {"threads": threads, "aggregate": aggregate}
