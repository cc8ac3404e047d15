"""The bridge's servers (maild/transport/http/server.py, uvicorn_runner.py): a fixed-length answer leaves in
one write (its headers wait for the body), a streamed answer's headers still leave at once; the
asyncio keep-alive timer starts lazily; a lean answer's JSON (orjson) means what json's would.

A real hypercorn (both backends) and uvicorn (asyncio) on loopback, with a small ASGI app that pauses between starting
its answer and sending the body, read by a plain socket: what arrives during the pause shows
whether the headers were held.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from maild.transport.http.server import serve_http
from shared.config import Settings

pytestmark = pytest.mark.anyio
PAUSE = 0.4


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    streamed = scope["path"] == "/stream"
    headers = [(b"content-type", b"text/event-stream")] if streamed else [
        (b"content-type", b"application/json"), (b"content-length", b"11")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await anyio.sleep(PAUSE)
    await send({"type": "http.response.body", "body": b'{"ok":true}', "more_body": streamed})
    if streamed:
        await send({"type": "http.response.body", "body": b""})


def exchange(port: int, path: str) -> tuple[bytes, bytes]:
    """(what arrived during the app's pause, everything) for one GET."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        sock.settimeout(PAUSE / 2)
        early = b""
        with contextlib.suppress(TimeoutError):
            early = sock.recv(65536)
        sock.settimeout(10)
        rest = early
        while chunk := sock.recv(65536):
            rest += chunk
        return early, rest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("server", ["auto", "hypercorn"])  # auto: uvicorn on asyncio, hypercorn on trio
async def test_fixed_length_answers_leave_in_one_write_streamed_ones_start_at_once(server: str) -> None:
    settings = dataclasses.replace(Settings(), http_host="127.0.0.1", http_port=free_port(), http_server=server)
    stop, done = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(serve_http, app, settings, stop, done)
        deadline = time.monotonic() + 10
        while True:  # started() comes before hypercorn binds: wait for the port
            try:
                with socket.create_connection(("127.0.0.1", settings.http_port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not listen"
                await anyio.sleep(0.02)
        early, whole = await anyio.to_thread.run_sync(exchange, settings.http_port, "/fixed")
        assert early == b""  # the headers waited for the body...
        assert whole.startswith(b"HTTP/1.1 200 ")
        assert whole.endswith(b'\r\n\r\n{"ok":true}')
        early, whole = await anyio.to_thread.run_sync(exchange, settings.http_port, "/stream")
        assert early.startswith(b"HTTP/1.1 200 ")
        assert b"transfer-encoding: chunked" in early.lower()
        assert b'{"ok":true}' not in early
        assert b'{"ok":true}' in whole
        stop.set()
        await done.wait()


@pytest.mark.parametrize("backend", ["asyncio"])  # hypercorn's asyncio worker only: trio keeps its own timer
async def test_the_keep_alive_timer_starts_only_after_the_grace_and_stops_at_once() -> None:
    from hypercorn.asyncio.task_group import TaskGroup

    from maild.transport.http.server import IDLE_GRACE_SECONDS, LazyIdleTask

    ran: list[str] = []

    async def idle() -> None:
        ran.append("started")
        try:
            await anyio.sleep(60)
        finally:
            ran.append("ended")

    async with TaskGroup(asyncio.get_running_loop()) as group:
        timer = LazyIdleTask()
        for _ in range(50):  # a busy connection: requests closer together than the grace
            await timer.restart(group, idle)
            await anyio.lowlevel.checkpoint()
            await timer.stop()
        assert ran == []
        await timer.restart(group, idle)  # then idle for longer than the grace: hypercorn's timer runs
        await anyio.sleep(IDLE_GRACE_SECONDS * 2)
        assert ran == ["started"]
        await timer.stop()  # the next request (or the connection closing) cancels it and waits for it
        assert ran == ["started", "ended"]
        await timer.restart(group, idle)
        await timer.stop()
        await anyio.sleep(IDLE_GRACE_SECONDS * 2)
        assert ran == ["started", "ended"]


@pytest.mark.parametrize("backend", ["asyncio"])  # no I/O: one run is enough
async def test_lean_answers_and_bodies_mean_the_same_json_whatever_orjson_would_change() -> None:
    import datetime
    import json

    from maild.transport.http.app import decode, encode_answer
    from maild.transport.unix import encode

    @dataclasses.dataclass
    class Point:
        x: int

    when = datetime.datetime(2026, 12, 1, 17, 0, tzinfo=datetime.UTC)
    for value in ({"t": when, "p": Point(1), "f": [1e-05, 0.1, 1e16], "s": "é ✓", "n": None},
                  {"big": 2**70}, {"lone": "\ud800"}, {1: "int key"}):
        frame = {"jsonrpc": "2.0", "id": 1, "result": value}
        assert json.loads(encode_answer(frame)) == json.loads(encode(frame))
        assert encode_answer(frame).endswith(b"}\n")
    assert decode(b'{"a": NaN}')["a"] != decode(b'{"a": NaN}')["a"]  # json's NaN, as before
    assert decode(b'{"a": 123456789012345678901234567890}') == {"a": 123456789012345678901234567890}
    assert decode('{"a": "x"}'.encode("utf-16")) == {"a": "x"}
    assert decode(b"not json") is None
