"""Resource subscriptions through the real shim, seen by the official MCP client (2025-era
`resources/subscribe`): mail for the subscribed inbox arrives as notifications/resources/updated."""

from __future__ import annotations

import warnings
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

from tests.conftest import Mailbox
from tests.test_push import until
from tests.test_shim import shim_params, structured

pytestmark = pytest.mark.anyio
PROJECT = "/push/shim"


async def test_a_subscribed_inbox_is_notified_through_the_shim(mailbox: Mailbox) -> None:
    updates: list[str] = []
    arrived = anyio.Event()

    async def on_message(message: Any) -> None:
        root = getattr(message, "root", message)
        if getattr(root, "method", None) == "notifications/resources/updated":
            updates.append(str(root.params.uri))
            arrived.set()

    async with (
        Client(shim_params(mailbox, "--agent", "SubBob"), mode="legacy", message_handler=on_message) as bob,
        Client(shim_params(mailbox, "--agent", "SubAlice"), mode="legacy") as alice,
    ):
        for client in (bob, alice):
            structured(await client.call_tool("register_agent", {"project_key": PROJECT, "program": "p", "model": "m"}))
        resources = bob.server_capabilities.resources
        assert resources is not None
        assert resources.subscribe is True
        with warnings.catch_warnings():  # the SDK marks resources/subscribe deprecated for the 2026 era
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await bob.subscribe_resource("resource://inbox/SubBob")
            with pytest.raises(MCPError, match="token"):  # somebody else's inbox needs its token
                await alice.subscribe_resource("resource://inbox/SubBob")
            with pytest.raises(MCPError, match="only resource://inbox"):
                await bob.subscribe_resource("resource://projects")
        structured(await alice.call_tool("send_message", {"project_key": PROJECT, "to": "SubAlice", "subject": "self",
                                                          "body_md": "not for bob"}))
        structured(await alice.call_tool("send_message", {"project_key": PROJECT, "to": "SubBob", "subject": "hi",
                                                          "body_md": "for bob"}))
        with anyio.fail_after(30):
            await arrived.wait()
        assert updates == ["resource://inbox/SubBob"]
        health = structured(await bob.call_tool("health_check", {}))
        assert health["wait_for_mail"]["subscriptions"] == 1
    # Both shims have gone: their subscriptions went with their connections.
    until(lambda: mailbox.call("health_check")["wait_for_mail"]["subscriptions"] == 0, "subscriptions to end")
