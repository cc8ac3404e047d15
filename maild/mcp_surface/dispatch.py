"""The lean dispatcher: `tools/call`, `tools/list` and `resources/read` without the SDK's machinery.

The SDK (server.py) owns handshakes, both protocol eras, notifications and everything rare; once a
request's era is known (a 2026-07-28 envelope, or a connection whose legacy `initialize` the SDK
answered), these three methods are served here from the registries: the tool's own argument
validation, the service call, and plain dicts for the transport to encode once. Answers are the
SDK path's JSON (tests/test_lean_dispatch.py compares every tool and resource). Anything this module
does not recognise as the common, well-formed case is declined (`None`) so the SDK answers it.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from maild.mcp_surface.registry import (
    ResourceOutput,
    ResourceRegistry,
    ToolOutput,
    ToolRegistry,
    error_payload,
    to_text,
)
from maild.services.sessions import current_session
from shared import __version__
from shared.errors import MailError, NotFound
from shared.protocol import (
    CLIENT_CAPABILITIES_META_KEY,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    MODERN_PROTOCOL_VERSION,
    PROTOCOL_VERSION_META_KEY,
)

log = logging.getLogger(__name__)

LEAN_METHODS = frozenset({"tools/call", "tools/list", "resources/read"})
SERVER_NAME = "agent-mail"
SERVER_INFO_META_KEY = "io.modelcontextprotocol/serverInfo"
# 2026-07-28 results of cacheable methods carry a freshness hint; the SDK's default is "private".
_CACHEABLE = frozenset({"tools/list", "resources/read"})
_ANNOTATION_KEYS = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")


def modern_version(params: Any) -> str | None:
    """The 2026-07-28 era if a request carries that era's full envelope, else None."""
    if not isinstance(params, dict):
        return None
    meta = params.get("_meta")
    if (
        isinstance(meta, dict)
        and meta.get(PROTOCOL_VERSION_META_KEY) == MODERN_PROTOCOL_VERSION
        and isinstance(meta.get(CLIENT_CAPABILITIES_META_KEY), dict)
    ):
        return MODERN_PROTOCOL_VERSION
    return None


def tools_mode(default_mode: str) -> str:
    session = current_session.get()
    mode = session.tools_mode if session is not None and session.tools_mode else default_mode
    return "extended" if mode == "extended" else "core"


def tool_result(
    structured: Any, is_error: bool = False, images: list[tuple[str, bytes]] | None = None
) -> dict[str, Any]:
    """A CallToolResult as the wire shows it (legacy era): JSON text, then any images (server.tool_result)."""
    text = f"{structured['error']['code']}: {structured['error']['message']}" if is_error else to_text(structured)
    content = [{"type": "text", "text": text}]
    content += [{"type": "image", "data": base64.b64encode(data).decode(), "mimeType": mime}
                for mime, data in images or []]
    return {"content": content, "isError": is_error, "structuredContent": structured}


def tool_error_result(exc: BaseException) -> dict[str, Any]:
    return tool_result({"error": error_payload(exc)}, is_error=True)


def lean_request(request: dict[str, Any]) -> dict[str, Any]:
    """What `LeanDispatcher.answer` reads of a `tools/call` it will answer (id, name, arguments),
    without the envelope (`jsonrpc`, `_meta`): a call that waits (wait_for_mail) keeps less alive.
    Anything `answer` might hand back to the SDK is returned whole, since the SDK needs all of it."""
    params = request.get("params")
    if request.get("method") != "tools/call" or not isinstance(params, dict):
        return request
    name, arguments = params.get("name"), params.get("arguments")
    if not isinstance(name, str) or not (arguments is None or isinstance(arguments, dict)):
        return request
    return {"id": request["id"], "method": "tools/call", "params": {"name": name, "arguments": arguments}}


class LeanDispatcher:
    """Answers the hot methods from the registries; one instance per daemon, shared by transports."""

    def __init__(self, services: Any, tools: ToolRegistry, resources: ResourceRegistry) -> None:
        self._services = services
        self._tools = tools
        self._resources = resources
        self._default_mode: str = services.settings.tools_mode
        self._tool_lists: dict[tuple[str, int], list[dict[str, Any]]] = {}

    async def answer(self, request: dict[str, Any], version: str) -> dict[str, Any] | None:
        """The JSON-RPC response to `request` in protocol `version`, or None to leave it to the SDK."""
        method = request.get("method")
        params = request.get("params")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            return None
        if method == "tools/call":
            name, arguments = params.get("name"), params.get("arguments")
            if not isinstance(name, str) or not (arguments is None or isinstance(arguments, dict)):
                return None
            if self._tools.get(name) is None:
                return _error(request, INVALID_PARAMS, f"Unknown tool: {name}", {"tool": name})
            result = await self._call_tool(name, arguments)
        elif method == "tools/list":
            if params.get("cursor") is not None:
                return None
            result = {"tools": self._tool_list(tools_mode(self._default_mode))}
        elif method == "resources/read":
            uri = params.get("uri")
            if not isinstance(uri, str):
                return None
            try:
                result = await self._read_resource(uri)
            except _JsonRpcError as exc:
                return _error(request, exc.code, exc.message, exc.data)
        else:
            return None
        return {"jsonrpc": "2.0", "id": request["id"], "result": _shape(method, version, result)}

    async def answer_as(self, identity: dict[str, Any], request: dict[str, Any], version: str) -> dict[str, Any] | None:
        """`answer`, acting as the HTTP session of a verified bridge identity (as server.py does)."""
        session = self._services.sessions.for_http(str(identity["subject"]), identity.get("agent"))
        await self._services.agents.bind_requested(session)
        token = current_session.set(session)
        try:
            return await self.answer(request, version)
        finally:
            current_session.reset(token)

    async def _call_tool(self, name: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
        try:
            value = await self._tools.call(self._services, name, dict(arguments or {}))
        except MailError as exc:
            return tool_error_result(exc)
        except Exception as exc:
            log.exception("tool %s failed", name)
            return tool_error_result(exc)
        images: list[tuple[str, bytes]] = []
        if isinstance(value, ToolOutput):
            images, value = value.images, value.structured
        result = tool_result(value if isinstance(value, dict) else {"result": value}, images=images)
        hint = await self._services.waiters.unread_hint(current_session.get(), value)
        if hint is not None:
            result["_meta"] = hint
        return result

    async def _read_resource(self, uri: str) -> dict[str, Any]:
        try:
            value = await self._resources.read(self._services, uri)
        except NotFound as exc:
            payload = error_payload(exc)
            raise _JsonRpcError(INVALID_PARAMS, payload["message"], {"uri": uri, **payload}) from None
        except MailError as exc:
            payload = error_payload(exc)
            raise _JsonRpcError(INVALID_PARAMS, payload["message"], payload) from None
        except Exception:
            log.exception("resource %s failed", uri)
            raise _JsonRpcError(INTERNAL_ERROR, "Internal server error") from None
        output = value if isinstance(value, ResourceOutput) else ResourceOutput(value, [])
        contents: list[dict[str, Any]] = []
        if output.data is not None:
            contents.append({"uri": uri, "mimeType": "application/json", "text": to_text(output.data)})
        contents += [{"uri": part_uri, "mimeType": mime, "blob": base64.b64encode(data).decode()}
                     for part_uri, mime, data in output.blobs]
        return {"contents": contents}

    def _tool_list(self, mode: str) -> list[dict[str, Any]]:
        # The registry is complete once the daemon starts; its size guards against a late addition.
        key = (mode, len(self._tools.all()))
        cached = self._tool_lists.get(key)
        if cached is None:
            cached = [
                {
                    "name": spec.name,
                    "description": spec.description,
                    "inputSchema": spec.input_schema(),
                    "annotations": dict(
                        zip(_ANNOTATION_KEYS, (spec.read_only, False, spec.idempotent, False), strict=True)
                    ),
                }
                for spec in self._tools.listed(mode)
            ]
            self._tool_lists[key] = cached
        return cached


class _JsonRpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


def _error(request: dict[str, Any], code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request["id"], "error": error}


def _shape(method: str, version: str, result: dict[str, Any]) -> dict[str, Any]:
    """What the SDK adds to a result in the 2026-07-28 era: cache hint, resultType, serverInfo stamp."""
    if version != MODERN_PROTOCOL_VERSION:
        return result
    shaped = dict(result)
    if method in _CACHEABLE:
        shaped["ttlMs"] = 0
        shaped["cacheScope"] = "private"
    shaped["resultType"] = "complete"
    shaped["_meta"] = {**result.get("_meta", {}), SERVER_INFO_META_KEY: {"name": SERVER_NAME, "version": __version__}}
    return shaped
