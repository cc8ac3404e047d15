"""The asyncio connection reader (maild/transport/receiver.py) over a real socket pair: it returns what
arrived, stops reading past its high-water mark until the bytes are taken, and ends cleanly.
The daemon-level behaviour (framing, floods, half-close) is covered in test_socket_protocol.py and
test_socket_hardening.py on both backends; this module pins the reader's own contract on asyncio."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from maild.transport.receiver import CHUNK, HIGH_WATER, LoopReceiver, open_receiver


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the loop-watching reader exists only there (trio keeps anyio's stream)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    theirs.setblocking(False)
    try:
        yield ours, theirs
    finally:
        ours.close()
        theirs.close()


def receiver_for(sock: socket.socket) -> LoopReceiver:
    import asyncio

    return LoopReceiver(sock, asyncio.get_running_loop())


def fill(sock: socket.socket, limit: int) -> int:
    """Write up to `limit` bytes without blocking; how many the kernel took."""
    written = 0
    while written < limit:
        try:
            written += sock.send(b"x" * min(65536, limit - written))
        except BlockingIOError:
            break
    return written


@pytest.mark.anyio
async def test_bytes_sent_while_nobody_waits_come_back_together(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    receiver = receiver_for(ours)
    try:
        theirs.sendall(b'{"a":1}\n')
        assert await receiver.receive() == b'{"a":1}\n'
        theirs.sendall(b"one\n")
        theirs.sendall(b"two\n")
        await anyio.sleep(0.05)  # both arrive (and are read by the loop) before anyone asks
        assert await receiver.receive() == b"one\ntwo\n"
    finally:
        receiver.close()


@pytest.mark.anyio
async def test_past_the_high_water_mark_it_stops_reading_until_the_bytes_are_taken(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    receiver = receiver_for(ours)
    try:
        first = fill(theirs, 64)
        assert await receiver.receive() == b"x" * first  # now watched by the loop
        sent = 0
        with anyio.fail_after(10):
            while True:  # the loop reads into its buffer until HIGH_WATER, then the kernel's fill up
                more = fill(theirs, 1 << 20)
                sent += more
                await anyio.sleep(0.02)
                if more == 0 and fill(theirs, 1) == 0:
                    break
        taken = await receiver.receive()
        assert HIGH_WATER <= len(taken) < min(sent, HIGH_WATER + CHUNK)  # bounded: the rest waited in the kernel
        with anyio.fail_after(10):
            while len(taken) < sent:  # and it all comes through once taken
                taken += await receiver.receive()
        assert len(taken) == sent
    finally:
        receiver.close()


@pytest.mark.anyio
async def test_end_of_stream_and_close(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    receiver = receiver_for(ours)
    theirs.sendall(b"last\n")
    theirs.shutdown(socket.SHUT_WR)
    assert await receiver.receive() == b"last\n"
    with pytest.raises(anyio.EndOfStream):
        await receiver.receive()
    receiver.close()
    with pytest.raises(anyio.ClosedResourceError):
        await receiver.receive()


@pytest.mark.anyio
async def test_a_reset_connection_is_a_broken_stream(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    receiver = receiver_for(ours)
    try:
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        theirs.close()
        with anyio.fail_after(5):
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await receiver.receive()
    finally:
        receiver.close()


@pytest.mark.anyio
async def test_a_waiting_reader_is_released_by_close(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _theirs = pair
    receiver = receiver_for(ours)
    failures: list[BaseException] = []

    async def wait() -> None:
        try:
            await receiver.receive()
        except anyio.ClosedResourceError as exc:
            failures.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.02)
            receiver.close()
    assert len(failures) == 1


@pytest.mark.anyio
async def test_an_anyio_unix_stream_gets_the_loop_reader_on_asyncio(tmp_path: Path) -> None:
    path = tmp_path / "s"
    listener = await anyio.create_unix_listener(path)
    async with listener, await anyio.connect_unix(path) as client:
        server_side = await listener.accept()
        async with server_side:
            source, watched = open_receiver(server_side)
            assert watched is source
            try:
                await client.send(b"hello\n")
                assert await source.receive() == b"hello\n"
            finally:
                assert watched is not None
                watched.close()
