"""Resource subscriptions through the real shim, seen by the official MCP client: 2025-era
`resources/subscribe` (mail for the subscribed inbox arrives as notifications/resources/updated) and
the 2026-07-28 era's `subscriptions/listen` stream (socket shim, HTTP bridge, remote shim)."""

from __future__ import annotations

import warnings
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.server.subscriptions import ResourceUpdated
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

from shared.protocol import MODERN_PROTOCOL_VERSION
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


async def test_a_modern_listen_stream_gets_the_inbox_updates_through_the_shim(mailbox: Mailbox) -> None:
    """2026-07-28 era: change notifications travel only on a `subscriptions/listen` stream."""
    async with (
        Client(shim_params(mailbox, "--agent", "LisBob")) as bob,  # mode="auto" negotiates the modern era
        Client(shim_params(mailbox, "--agent", "LisAlice")) as alice,
    ):
        assert bob.session.protocol_version == MODERN_PROTOCOL_VERSION
        registered = [structured(await client.call_tool(
            "register_agent", {"project_key": PROJECT, "program": "p", "model": "m"})) for client in (bob, alice)]
        resources = bob.server_capabilities.resources
        assert resources is not None
        assert resources.subscribe is True
        with pytest.raises(MCPError, match="token"):  # somebody else's inbox needs its token
            async with alice.listen(resource_subscriptions=["resource://inbox/LisBob"]):
                pass
        with pytest.raises(MCPError, match="only resource://inbox"):
            async with bob.listen(resource_subscriptions=["resource://inbox/LisBob", "resource://projects"]):
                pass
        with pytest.raises(MCPError, match="token"):  # one refused URI refuses all: his own is not kept
            async with bob.listen(resource_subscriptions=["resource://inbox/LisBob", "resource://inbox/LisAlice"]):
                pass
        assert structured(await bob.call_tool("health_check", {}))["wait_for_mail"]["subscriptions"] == 0

        async with bob.listen(tools_list_changed=True, resource_subscriptions=["resource://inbox/LisBob"]) as sub:
            assert sub.honored.resource_subscriptions == ["resource://inbox/LisBob"]
            assert not sub.honored.tools_list_changed  # never published, so not promised
            assert structured(await bob.call_tool("health_check", {}))["wait_for_mail"]["subscriptions"] == 1
            for to, subject in (("LisAlice", "not for bob"), ("LisBob", "for bob")):
                structured(await alice.call_tool("send_message", {"project_key": PROJECT, "to": to,
                                                                  "subject": subject, "body_md": "hi"}))
            with anyio.fail_after(30):
                event = await sub.__anext__()
            assert event == ResourceUpdated(uri="resource://inbox/LisBob")
        # Ending the listen ends its subscription on the daemon.
        await subscriptions_become(bob, 0)

        # With Bob's token, Carol may listen to his inbox; then her shim goes away mid-stream.
        token = registered[0]["registration_token"]
        carol_uri = f"resource://inbox/LisBob?agent_token={token}"
        events: list[object] = []
        listening, heard = anyio.Event(), anyio.Event()

        async def carol() -> None:
            async with (
                Client(shim_params(mailbox)) as client,
                client.listen(resource_subscriptions=[carol_uri]) as carol_sub,
            ):
                listening.set()
                async for carol_event in carol_sub:
                    events.append(carol_event)
                    heard.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(carol)
            with anyio.fail_after(30):
                await listening.wait()
            await subscriptions_become(bob, 1)
            structured(await alice.call_tool("send_message", {"project_key": PROJECT, "to": "LisBob",
                                                              "subject": "again", "body_md": "hi"}))
            with anyio.fail_after(30):
                await heard.wait()
            assert events == [ResourceUpdated(uri=carol_uri)]
            tg.cancel_scope.cancel()  # carol's client and shim go away with the stream open
        await subscriptions_become(bob, 0)  # the dropped listener's subscription has gone
    # ...and its connection closed: the daemon does not hold a hung-up connection for its open listen.
    until(lambda: mailbox.call("health_check")["sessions"]["live"] == 1, "the sessions to close (health's own is live)")


async def subscriptions_become(client: Client, count: int) -> None:
    """Wait (without blocking the event loop the clients run on) for the daemon's subscription count."""
    for _ in range(1500):
        if structured(await client.call_tool("health_check", {}))["wait_for_mail"]["subscriptions"] == count:
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"the daemon's subscriptions never became {count}")


async def test_a_modern_listen_stream_works_over_the_http_bridge(mailbox: Mailbox) -> None:
    """The SDK serves a 2026-07-28 listen over streamable HTTP as an SSE response (even in JSON mode);
    the listener is the token's agent."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from tests.test_http import SECRET, good, start_bridge

    bridge = start_bridge(mailbox, f'http_jwt_enabled = true\nhttp_jwt_secret = "{SECRET}"\n'
                                   'http_jwt_audience = "agent-mail"\nhttp_jwt_issuer = "https://issuer.test"\n')
    alice = mailbox.call("register_agent", project_key=PROJECT, program="p", model="m", name="HttpAlice")
    headers = {"Authorization": f"Bearer {good(sub='bob-bot', agent='HttpBob')}"}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http_client:
        transport = streamable_http_client(f"http://127.0.0.1:{bridge.port}/mcp", http_client=http_client)
        async with Client(transport) as bob:
            assert bob.session.protocol_version == MODERN_PROTOCOL_VERSION
            structured(await bob.call_tool("register_agent", {"project_key": PROJECT, "program": "p", "model": "m"}))
            with pytest.raises(MCPError, match="token"):
                async with bob.listen(resource_subscriptions=["resource://inbox/HttpAlice"]):
                    pass
            async with bob.listen(resource_subscriptions=["resource://inbox/HttpBob"]) as sub:
                await subscriptions_become(bob, 1)
                mailbox.call("send_message", project_key=PROJECT, sender_name="HttpAlice", to=["HttpBob"],
                             sender_token=alice["registration_token"],
                             subject="hi", body_md="over http")
                with anyio.fail_after(30):
                    event = await sub.__anext__()
                assert event == ResourceUpdated(uri="resource://inbox/HttpBob")
            await subscriptions_become(bob, 0)
            # A client that goes away with its stream open (the SSE response is dropped mid-stream).
            with anyio.move_on_after(1):
                async with bob.listen(resource_subscriptions=["resource://inbox/HttpBob"]):
                    await subscriptions_become(bob, 1)
                    await anyio.sleep_forever()
    until(lambda: mailbox.call("health_check")["wait_for_mail"]["subscriptions"] == 0, "the dropped stream to end")


async def test_a_modern_listen_stream_is_relayed_by_the_remote_shim(mailbox: Mailbox) -> None:
    """`mailctl mcp --remote URL` POSTs the listen on a connection of its own and relays its SSE answer;
    ending the listen closes that connection, which ends the stream on the bridge."""
    from tests.test_http import free_port
    from tests.test_remote import remote_params, serve

    url = serve(mailbox, free_port())
    alice = mailbox.call("register_agent", project_key=PROJECT, program="p", model="m", name="RemAlice")
    async with Client(remote_params(mailbox, url)) as bob:
        assert bob.session.protocol_version == MODERN_PROTOCOL_VERSION
        structured(await bob.call_tool("register_agent", {"project_key": PROJECT, "program": "p", "model": "m",
                                                          "name": "RemBob"}))
        with pytest.raises(MCPError, match="only resource://inbox"):
            async with bob.listen(resource_subscriptions=["resource://projects"]):
                pass
        async with bob.listen(resource_subscriptions=["resource://inbox/RemBob"]) as sub:
            await subscriptions_become(bob, 1)
            mailbox.call("send_message", project_key=PROJECT, sender_name="RemAlice", to=["RemBob"],
                         sender_token=alice["registration_token"], subject="hi", body_md="from near")
            with anyio.fail_after(30):
                event = await sub.__anext__()
            assert event == ResourceUpdated(uri="resource://inbox/RemBob")
        await subscriptions_become(bob, 0)
