"""Idempotent sends: a retry with the same idempotency_key (or client_msg_id) returns the first result."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.errors import InvalidArgument
from tests.conftest import Mailbox, git_init
from tests.test_messaging import Agent


@pytest.fixture(scope="module")
def mailbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailbox]:
    """One daemon for the module (the rule lives in one sync unit of work: the backend does not matter)."""
    box = Mailbox(git_init(tmp_path_factory.mktemp("idem") / "repo"), "asyncio")
    try:
        yield box
    finally:
        box.stop()


PAIRS = iter([("BlueLake", "GreenCastle"), ("RedStone", "WhiteHill"), ("PurpleBear", "SilverCreek")])


@pytest.fixture
def pair(mailbox: Mailbox) -> Iterator[tuple[Agent, Agent]]:
    """Two agents of a project of their own (names are unique per mailbox: each test gets new ones)."""
    first, second = next(PAIRS)
    a, b = Agent(mailbox, first, project=f"/{first}"), Agent(mailbox, second, project=f"/{first}")
    yield a, b
    a.conn.close()
    b.conn.close()


def test_a_send_retried_with_the_same_key_is_delivered_once(mailbox: Mailbox, pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    first = a.call("send_message", to=b.name, subject="deploy", body_md="go", idempotency_key="k-1")
    again = a.call("send_message", to=b.name, subject="deploy", body_md="go", idempotency_key="k-1")
    assert again == first
    alias = a.call("send_message", to=b.name, subject="deploy", body_md="go", client_msg_id="k-1")
    assert alias == first, "client_msg_id is an alias of idempotency_key"
    with mailbox.client() as fresh:  # a new connection (as after a crash) sees the same key
        retried = fresh.call_tool("send_message", {
            "project_key": a.project, "to": b.name, "subject": "deploy", "body_md": "go",
            "sender_name": a.name, "sender_token": a.info["registration_token"], "idempotency_key": "k-1"})
    assert retried == first
    assert [m["id"] for m in b.inbox()["result"]] == [first["deliveries"][0]["payload"]["id"]]


def test_keys_are_scoped_to_the_sender_and_refuse_a_different_message(pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    mine = a.send(b.name, subject="one", idempotency_key="same")
    theirs = b.send(a.name, subject="one", idempotency_key="same")
    assert mine["id"] != theirs["id"], "another sender's key is another key"
    with pytest.raises(InvalidArgument, match="already used for a different message"):
        a.send(b.name, subject="two", idempotency_key="same")
    with pytest.raises(InvalidArgument, match="idempotency_key"):
        a.send(b.name, subject="three", idempotency_key="x" * 500)
    plain = [a.send(b.name, subject="no key") for _ in range(2)]
    assert plain[0]["id"] != plain[1]["id"], "without a key every send is a new message"


def test_a_reply_retried_with_the_same_key_is_delivered_once(pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    original = a.send(b.name, subject="question")
    replies = [b.call("reply_message", message_id=original["id"], body_md="yes", idempotency_key="r-1")
               for _ in range(2)]
    assert replies[0] == replies[1]
    assert [m["subject"] for m in a.inbox()["result"]] == ["Re: question"]
