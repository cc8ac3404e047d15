"""The change feed: what the daemon just committed, as a numbered stream of small events.

The store announces each committed write ({table: [rowids]}); this module turns that into events
by kind (`mail`, `read`, `presence`, `reservations`, `archive`) and wakes every subscriber, so the
web UI's Server-Sent Events follow commits instead of polling. It keeps a short ring of recent
events so a client reconnecting with `Last-Event-ID` misses nothing that is still in the ring. It
does not decide who may see what: an event carries kinds and message ids only, never content.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from maild.store import UNREAD_MOVED, Store

RING_SIZE = 512
# Which table's commits mean what to a reader of the mailbox. message_recipients is WITHOUT ROWID,
# which SQLite's update hook never reports: a read or an ack shows up as the recipient's unread
# counter (agents, by trigger) and as its archive receipt (archive_outbox).
KIND_OF_TABLE: dict[str, tuple[str, ...]] = {
    "messages": ("mail",),
    "agents": ("presence", "read"),
    "sessions": ("presence",),
    "file_reservations": ("reservations",),
    "archive_outbox": ("archive",),
}


@dataclass(frozen=True)
class Change:
    seq: int
    kinds: tuple[str, ...]
    message_ids: tuple[int, ...] = ()
    agent_ids: tuple[int, ...] = ()  # agents rows written
    unread_ids: tuple[int, ...] = ()  # agents whose unread counter moved (a subset of those rows)
    # time.monotonic() of the commit (taken on the writer thread): benches time commit -> client from it.
    at: float = field(default_factory=time.monotonic)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kinds": list(self.kinds), "message_ids": list(self.message_ids)}


class ChangeFeed:
    def __init__(self) -> None:
        self._seq = 0
        self._ring: deque[Change] = deque(maxlen=RING_SIZE)
        # Made when someone first waits: a commit nobody waits on then creates no Event (one per
        # commit was ~2 % of the loop's CPU per send).
        self._wakeup: anyio.Event | None = None
        self._subscribers = 0
        self._listeners: list[Callable[[Change], object]] = []

    @classmethod
    def following(cls, store: Store) -> ChangeFeed:
        """A feed fed by every commit of `store`."""
        feed = cls()
        store.on_commit(lambda changed: feed.publish(changed, store.last_commit_at))
        return feed

    def listen(self, listener: Callable[[Change], object]) -> None:
        """Call `listener(change)` on the event loop for every event (it must not block): how
        wait_for_mail and resource subscriptions are woken by the same commits the web UI follows."""
        self._listeners.append(listener)

    def publish(self, changed: dict[str, list[int]], at: float | None = None) -> Change | None:
        """Called by the store after a commit (on the event loop), `at` its time.monotonic() (now
        if not given). Returns the event, if any."""
        kinds = sorted({kind for t in changed for kind in KIND_OF_TABLE.get(t, ())})
        if not kinds:
            return None
        self._seq += 1
        change = Change(
            self._seq, tuple(kinds), tuple(changed.get("messages", ())), tuple(changed.get("agents", ())),
            tuple(changed.get(UNREAD_MOVED, ())), time.monotonic() if at is None else at,
        )
        self._ring.append(change)
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:
            wakeup.set()
        for listener in self._listeners:
            listener(change)
        return change

    @property
    def last_seq(self) -> int:
        return self._seq

    def since(self, seq: int) -> list[Change]:
        """Events after `seq` still in the ring (all of them if `seq` is older than the ring)."""
        return [c for c in self._ring if c.seq > seq]

    async def wait_after(self, seq: int, patience: float) -> list[Change]:
        """Events after `seq`, waiting up to `patience` seconds for one (an empty list: none came).
        A `seq` ahead of the feed (a client of an earlier daemon) counts as "from now on"."""
        seq = min(seq, self._seq)
        found = self.since(seq)
        if found:
            return found
        wakeup = self._wakeup
        if wakeup is None:
            wakeup = self._wakeup = anyio.Event()
        self._subscribers += 1
        try:
            with anyio.move_on_after(patience):
                await wakeup.wait()
        finally:
            self._subscribers -= 1
        return self.since(seq)

    def statistics(self) -> dict[str, Any]:
        return {"seq": self._seq, "subscribers": self._subscribers}
