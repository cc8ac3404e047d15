"""The LLM side of summaries: the prompt and its token budget, and a litellm client.

Owns: choosing which messages fit the model's input budget (importance first), calling litellm off
the event loop with a deadline, a response cache and cost accounting, and turning every failure
into a status (`timeout`, `unavailable`, `bad_reply`) so summaries fall back to the heuristics.
Does not: read mail (summaries.py does), or call any provider unless LLM_ENABLED and a model are set.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from shared.config import Settings

log = logging.getLogger(__name__)

MAX_LIST = 10
BODY_CHARS_FOR_LLM = 800
CACHE_ENTRIES = 256
IMPORTANCE_RANK = {"urgent": 3, "high": 2, "normal": 1, "low": 0}

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

    async def complete(self, model: str, prompt: str, system: str = SYSTEM_PROMPT) -> LLMResult:
        """One completion asked for a JSON object (`system` says which; summaries by default)."""
        key = hashlib.sha256(
            json.dumps([model, self.settings.llm_temperature, self.settings.llm_max_tokens, system, prompt]).encode()
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
                self._call, model, prompt, system, limiter=self._limiter, abandon_on_cancel=True
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

    def _call(self, model: str, prompt: str, system: str) -> LLMResult:
        """Runs in a worker thread (litellm already imported). Every failure becomes a status."""
        import litellm
        from litellm.exceptions import Timeout as LLMTimeout

        kwargs: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
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
