"""Thread summaries: a heuristic digest always, refined by an LLM (litellm) only when configured.

Owns: extracting participants, key points, action items, mentions and code references from a
thread's markdown; choosing which messages fit the LLM's input budget (importance first); the
call itself off the event loop with a deadline, a response cache and cost accounting; falling
back to the heuristic result with a clear `llm_status` whenever the model cannot answer.
Does not: store summaries, or call any provider unless LLM_ENABLED and a model are set.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import math
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from maild.services.projects import find_in, validate_project_key
from maild.services.search import load_messages, visible_clause
from maild.store import Connection, Store
from shared.config import Settings
from shared.errors import InvalidArgument

log = logging.getLogger(__name__)

MAX_LIST = 10
MAX_THREADS = 100
BODY_CHARS_FOR_LLM = 800
LLM_THREADS_REFINED = 8
CACHE_ENTRIES = 256
IMPORTANCE_RANK = {"urgent": 3, "high": 2, "normal": 1, "low": 0}

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
# The LLM prompt and its budget

SYSTEM_PROMPT = (
    "You summarise a thread of messages between AI coding agents. Reply with one JSON object and "
    "nothing else, with keys: overview (one or two sentences), participants (names), key_points, "
    "action_items (strings; prefix done ones with [x] and open ones with [ ]), code_references. "
    "Keep each list to at most 10 short items."
)


def estimate_tokens(text: str) -> int:
    """A deliberately pessimistic estimate (3 characters a token): no tokenizer download, no surprises."""
    return math.ceil(len(text) / 3)


def _render(message: dict[str, Any]) -> str:
    body = (message.get("body_md") or "")[:BODY_CHARS_FOR_LLM]
    return (
        f"## #{message['id']} from {message['from']} at {message['created_ts']} "
        f"[{message['importance']}]\nSubject: {message['subject']}\n{body}\n"
    )


@dataclass
class Prompt:
    text: str
    message_ids: list[int]
    tokens: int
    budget: int


def build_prompt(header: str, messages: list[dict[str, Any]], budget: int) -> Prompt:
    """Pick messages importance first (newest first within a level) while they fit `budget` tokens.

    The chosen messages are shown in thread order. Budget counts the system prompt and header too.
    """
    used = estimate_tokens(SYSTEM_PROMPT) + estimate_tokens(header)
    by_priority = sorted(
        messages, key=lambda m: (IMPORTANCE_RANK.get(m["importance"], 1), m["created_ts"], m["id"]), reverse=True
    )
    chosen: dict[int, str] = {}
    for message in by_priority:
        chunk = _render(message)
        cost = estimate_tokens(chunk)
        if used + cost > budget:
            continue  # a smaller, less important message may still fit
        chosen[message["id"]] = chunk
        used += cost
    ordered = [m for m in messages if m["id"] in chosen]
    text = header + "\n" + "\n".join(chosen[m["id"]] for m in ordered)
    return Prompt(text, [m["id"] for m in ordered], used, budget)


def parse_reply(content: str) -> dict[str, Any] | None:
    """The JSON object in a model's reply (bare or inside prose / a code fence), else None."""
    candidates = [content]
    start, end = content.find("{"), content.rfind("}")
    if 0 <= start < end:
        candidates.append(content[start : end + 1])
    for text in candidates:
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


_LIST_KEYS = ("participants", "key_points", "action_items", "code_references")


def merge_reply(summary: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
    """Non-empty, well-typed keys from the model override the heuristics; nothing else changes."""
    merged = dict(summary)
    for key in _LIST_KEYS:
        value = reply.get(key)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            merged[key] = [v.strip() for v in value][: 2 * MAX_LIST]
    overview = reply.get("overview") or reply.get("summary")
    if isinstance(overview, str) and overview.strip():
        merged["overview"] = overview.strip()
    return merged


# ---------------------------------------------------------------------------------------------
# The LLM client: litellm off the event loop, with a deadline, a cache and cost accounting


@dataclass
class LLMResult:
    status: str  # ok | timeout | unavailable | bad_reply
    reply: dict[str, Any] | None = None
    error: str | None = None
    cached: bool = False


@dataclass
class LLMStats:
    calls: int = 0
    errors: int = 0
    timeouts: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class LLM:
    settings: Settings
    stats: LLMStats = field(default_factory=LLMStats)
    _cache: collections.OrderedDict[str, dict[str, Any]] = field(default_factory=collections.OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _limiter: anyio.CapacityLimiter | None = None

    @property
    def configured(self) -> bool:
        return self.settings.llm_enabled and bool(self.settings.llm_default_model)

    def model_for(self, requested: str | None) -> str:
        return (requested or "").strip() or self.settings.llm_default_model

    def statistics(self) -> dict[str, Any]:
        with self._lock:
            stats = dict(self.stats.__dict__)
        stats["cost_usd"] = round(stats["cost_usd"], 6)
        return {
            "enabled": self.configured,
            "model": self.settings.llm_default_model or None,
            "cache": self.settings.llm_cache_backend if self.settings.llm_cache_enabled else "off",
            "cache_entries": len(self._cache),
            **stats,
        }

    async def complete(self, model: str, prompt: str) -> LLMResult:
        key = hashlib.sha256(
            json.dumps([model, self.settings.llm_temperature, self.settings.llm_max_tokens, prompt]).encode()
        ).hexdigest()
        if self.settings.llm_cache_enabled:
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    self.stats.cache_hits += 1
                    return LLMResult("ok", hit, cached=True)
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(4)
        # Importing litellm takes seconds the first time: not the model's time, so not in the deadline.
        problem = await anyio.to_thread.run_sync(_import_litellm, limiter=self._limiter)
        if problem:
            return self._record(key, LLMResult("unavailable", error=problem))
        # litellm gets the timeout too; our own deadline (plus grace) covers a call that ignores it.
        deadline = self.settings.llm_timeout_seconds + 1.0
        outcome: LLMResult | None = None
        with anyio.move_on_after(deadline):
            outcome = await anyio.to_thread.run_sync(
                self._call, model, prompt, limiter=self._limiter, abandon_on_cancel=True
            )
        if outcome is None:
            outcome = LLMResult("timeout", error=f"no answer within {self.settings.llm_timeout_seconds:g} s")
        return self._record(key, outcome)

    def _record(self, key: str, outcome: LLMResult) -> LLMResult:
        with self._lock:
            if outcome.status == "timeout":
                self.stats.timeouts += 1
            elif outcome.status != "ok":
                self.stats.errors += 1
            elif outcome.reply is not None and self.settings.llm_cache_enabled:
                self._cache[key] = outcome.reply
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return outcome

    def _call(self, model: str, prompt: str) -> LLMResult:
        """Runs in a worker thread (litellm already imported). Every failure becomes a status."""
        import litellm
        from litellm.exceptions import Timeout as LLMTimeout

        kwargs: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
            "temperature": self.settings.llm_temperature,
            "max_tokens": self.settings.llm_max_tokens,
            "timeout": self.settings.llm_timeout_seconds,
        }
        mock = self.settings.llm_mock_response
        if mock == "litellm.Timeout":
            kwargs.update(mock_response="", mock_timeout=True)
        elif mock:
            kwargs["mock_response"] = mock
        with self._lock:
            self.stats.calls += 1
        try:
            response = litellm.completion(**kwargs)
        except LLMTimeout as exc:
            return LLMResult("timeout", error=_short(exc))
        except Exception as exc:  # any provider failure degrades to the heuristic result
            log.warning("LLM call to %s failed: %s", model, _short(exc))
            return LLMResult("unavailable", error=_short(exc))
        self._account(litellm, response, model)
        try:
            content = response.choices[0].message.content or ""
        except (AttributeError, IndexError):
            content = ""
        reply = parse_reply(content)
        if reply is None:
            return LLMResult("bad_reply", error="the model did not answer with a JSON object")
        return LLMResult("ok", reply)

    def _account(self, litellm: Any, response: Any, model: str) -> None:
        usage = getattr(response, "usage", None)
        try:
            cost = float(litellm.completion_cost(completion_response=response))
        except Exception:  # models without a price (local, mocked) cost 0 here
            cost = 0.0
        with self._lock:
            self.stats.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
            self.stats.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
            self.stats.cost_usd += cost
        if self.settings.llm_cost_logging_enabled:
            log.info("LLM %s: %s tokens, $%.6f", model, getattr(usage, "total_tokens", "?"), cost)


def _import_litellm() -> str | None:
    """Import litellm (in a worker thread); None when usable, else why not."""
    # Never fetch litellm's price map from the network at import time.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError as exc:
        return f"litellm is not installed ({exc}); install the extra: pip install 'agent-mail[llm]'"
    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


# ---------------------------------------------------------------------------------------------
# The service


def _thread_rows(conn: Connection, project_id: int, thread_id: str, viewer: int | None, limit: int) -> list[int]:
    params: dict[str, Any] = {"project": project_id, "thread": thread_id, "limit": limit}
    match = "m.thread_id = :thread"
    if thread_id.isdigit():
        params["seed"] = int(thread_id)
        match = "(m.thread_id = :thread OR m.id = :seed)"
    visible = visible_clause(viewer, params)
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
            ids = _thread_rows(conn, project["id"], thread, viewer, max(1, limit))
            found = load_messages(conn, ids, viewer, include_bodies=include_bodies)
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
