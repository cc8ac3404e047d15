"""Server-Sent Events for the web mailbox: one `change` event per commit the feed announces.

Each event carries the feed's sequence number as its SSE id, so a browser that reconnects (which
EventSource does by itself, after `retry` ms) sends `Last-Event-ID` and gets what it missed while
that is still in the feed's ring. A comment line every few seconds keeps proxies from closing an
idle stream. The events say *what kind* of thing changed; the page fetches what it shows itself,
through the same visibility rules as any page, so an event never carries content.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from maild.services.changes import ChangeFeed

if TYPE_CHECKING:
    from maild.web.app import Page

RETRY_MS = 1500
KEEPALIVE_SECONDS = 15.0


def _frame(change_id: int, payload: dict[str, object]) -> bytes:
    return f"id: {change_id}\nevent: change\ndata: {json.dumps(payload)}\n\n".encode()


def events(feed: ChangeFeed) -> Callable[[Request, Page], Awaitable[Response]]:
    async def handler(request: Request, page: Page) -> Response:
        raw = request.headers.get("last-event-id", "")
        after = int(raw) if raw.isdigit() else None
        owner = page.agent_id is None  # agents' pages get kinds only, never message ids

        async def stream() -> AsyncIterator[bytes]:
            seen = feed.last_seq if after is None else min(after, feed.last_seq)
            yield f"retry: {RETRY_MS}\nevent: hello\ndata: {json.dumps({'seq': seen})}\n\n".encode()
            while True:
                changes = await feed.wait_after(seen, KEEPALIVE_SECONDS)
                if not changes:
                    yield b": keep-alive\n\n"
                    continue
                for change in changes:
                    payload = change.to_dict()
                    if not owner:
                        payload.pop("message_ids", None)
                    seen = change.seq
                    yield _frame(change.seq, payload)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    return handler
