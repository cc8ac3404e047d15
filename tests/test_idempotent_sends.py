"""Idempotent sends: a retry with the same idempotency_key (or client_msg_id) returns the first result."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.errors import InvalidArgument
from tests.conftest import Mailbox
from tests.test_messaging import Agent


@pytest.fixture
def pair(mailbox: Mailbox) -> Iterator[tuple[Agent, Agent]]:
    a, b = Agent(mailbox, "BlueLake"), Agent(mailbox, "GreenCastle")
    yield a, b
    a.conn.close()
    b.conn.close()


def test_a_send_retried_with_the_same_key_is_delivered_once(mailbox: Mailbox, pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    first = a.call("send_message", to="GreenCastle", subject="deploy", body_md="go", idempotency_key="k-1")
    again = a.call("send_message", to="GreenCastle", subject="deploy", body_md="go", idempotency_key="k-1")
    assert again == first
    alias = a.call("send_message", to="GreenCastle", subject="deploy", body_md="go", client_msg_id="k-1")
    assert alias == first, "client_msg_id is an alias of idempotency_key"
    with mailbox.client() as fresh:  # a new connection (as after a crash) sees the same key
        retried = fresh.call_tool("send_message", {
            "project_key": a.project, "to": "GreenCastle", "subject": "deploy", "body_md": "go",
            "sender_name": "BlueLake", "sender_token": a.info["registration_token"], "idempotency_key": "k-1"})
    assert retried == first
    assert [m["id"] for m in b.inbox()["result"]] == [first["deliveries"][0]["payload"]["id"]]


def test_keys_are_scoped_to_the_sender_and_refuse_a_different_message(pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    mine = a.send("GreenCastle", subject="one", idempotency_key="same")
    theirs = b.send("BlueLake", subject="one", idempotency_key="same")
    assert mine["id"] != theirs["id"], "another sender's key is another key"
    with pytest.raises(InvalidArgument, match="already used for a different message"):
        a.send("GreenCastle", subject="two", idempotency_key="same")
    with pytest.raises(InvalidArgument, match="idempotency_key"):
        a.send("GreenCastle", subject="three", idempotency_key="x" * 500)
    plain = [a.send("GreenCastle", subject="no key") for _ in range(2)]
    assert plain[0]["id"] != plain[1]["id"], "without a key every send is a new message"


def test_a_reply_retried_with_the_same_key_is_delivered_once(pair: tuple[Agent, Agent]) -> None:
    a, b = pair
    original = a.send("GreenCastle", subject="question")
    replies = [b.call("reply_message", message_id=original["id"], body_md="yes", idempotency_key="r-1")
               for _ in range(2)]
    assert replies[0] == replies[1]
    assert [m["subject"] for m in a.inbox()["result"]] == ["Re: question"]
