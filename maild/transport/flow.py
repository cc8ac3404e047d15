"""Flow control for one connection: how many requests it has in flight and how many answer bytes wait.

A client that pipelines requests without reading the answers must not grow the daemon without
bound (issue 13: 60,000 frames took it from 75 MB to 1.1 GB). The reader admits a request only
while fewer than `max_requests` are unanswered and fewer than `max_unsent_bytes` of answers are
waiting to be written; otherwise it stops reading, so the kernel's buffers fill and the client's
own writes block. This module counts and waits; it does not read, write or dispatch.
"""

from __future__ import annotations

from typing import Any

import anyio

MAX_IN_FLIGHT = 64
MAX_UNSENT_BYTES = 8 * 1024 * 1024


class InFlight:
    """Unanswered request ids and unsent answer bytes, with a wait for room and a wait for drained.

    A client may also half-close its side right after its last request (`socat`, `printf | nc`):
    the connection then stays open until what it already asked is answered.
    """

    def __init__(self, max_requests: int = MAX_IN_FLIGHT, max_unsent_bytes: int = MAX_UNSENT_BYTES) -> None:
        self._max_requests = max(1, max_requests)
        self._max_bytes = max(1, max_unsent_bytes)
        self._ids: dict[Any, int] = {}  # id -> count (a careless client may reuse an id)
        self._count = 0
        self._unsent = 0
        # Made only when someone waits (rarely: a full window, or EOF with answers owed): an idle
        # connection then costs no Event (~0.8 KB on asyncio), and an answer makes none.
        self._changed: anyio.Event | None = None

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_changed(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    async def admit(self, request_id: Any) -> None:
        """Wait until there is room, then count `request_id` as in flight."""
        while self._count >= self._max_requests or self._unsent >= self._max_bytes:
            await self._wait_changed()
        self._ids[request_id] = self._ids.get(request_id, 0) + 1
        self._count += 1

    def answered(self, request_id: Any) -> None:
        left = self._ids.get(request_id)
        if left is None:
            return
        if left <= 1:
            del self._ids[request_id]
        else:
            self._ids[request_id] = left - 1
        self._count -= 1
        self._notify()

    def is_pending(self, request_id: Any) -> bool:
        return request_id in self._ids

    def queued(self, nbytes: int) -> None:
        self._unsent += nbytes

    def sent(self, nbytes: int) -> None:
        self._unsent -= nbytes
        self._notify()

    async def wait_drained(self) -> None:
        while self._count:
            await self._wait_changed()

    def statistics(self) -> dict[str, int]:
        return {"in_flight": self._count, "unsent_bytes": self._unsent}
