"""The revoked-token list shared through Redis, for bridges that share rate limits there
(HTTP_RATE_LIMIT_BACKEND=redis): one hash, `agent-mail:revoked`, field `kind:value` → JSON entry.

Each bridge keeps the whole list in memory (services/revocations.py) and refreshes it from Redis
every REFRESH_SECONDS with one HGETALL, so the per-request check never waits for Redis; a revocation
made on one bridge reaches the others within that interval. Entries this bridge could not publish
(Redis down) are published on a later refresh. Redis being away never refuses anyone: the local
list (from this daemon's database) still holds.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio

from maild.services.revocations import Revocations

log = logging.getLogger(__name__)
HASH = "agent-mail:revoked"
REFRESH_SECONDS = 1.0


class RedisDenyList:
    def __init__(self, url: str) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._client: Any = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0,
                                                 retry=Retry(NoBackoff(), 0))
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._down = False

    def publish(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        try:
            self._client.hset(HASH, mapping={f"{e['kind']}:{e['value']}": json.dumps(e) for e in entries})
        except self._errors as exc:
            self._note_down(exc)  # the next refresh publishes them

    def withdraw(self, kind: str, value: str) -> None:
        try:
            self._client.hdel(HASH, f"{kind}:{value}")
        except self._errors as exc:
            self._note_down(exc)

    def fetch(self) -> list[dict[str, Any]] | None:
        """Every shared entry, or None when Redis cannot be reached."""
        try:
            raw = self._client.hgetall(HASH)
        except self._errors as exc:
            self._note_down(exc)
            return None
        if self._down:
            log.warning("Redis reachable again: the revoked-token list is shared again")
            self._down = False
        entries = []
        for value in raw.values():
            try:
                entry = json.loads(value)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def _note_down(self, exc: BaseException) -> None:
        if not self._down:
            log.warning("Redis unreachable (%s): revoked tokens are checked against this daemon's own list "
                        "until it is back", exc)
        self._down = True

    async def run(self, revocations: Revocations) -> None:
        """Keep `revocations`' shared view current, and publish what this bridge revoked."""
        while True:
            entries = await anyio.to_thread.run_sync(self.fetch)
            if entries is not None:
                revocations.merge_shared(entries)
                missing = revocations.unpublished((str(e.get("kind")), str(e.get("value"))) for e in entries)
                if missing:
                    await anyio.to_thread.run_sync(self.publish, missing)
            await anyio.sleep(REFRESH_SECONDS)
