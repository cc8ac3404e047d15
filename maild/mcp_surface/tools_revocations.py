"""Operator tools for the HTTP bridge's deny list: `revoke_token` and `list_revoked_tokens` (extended).

Thin adapters over services/revocations.py, which refuses agents' JWTs: only callers on the Unix
socket (`mailctl http revoke`) or the bridge's static bearer may change or read the list.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from maild.mcp_surface.context import Services
from maild.mcp_surface.registry import Args, ToolRegistry
from maild.services.revocations import Revocations
from maild.services.sessions import current_session
from shared.errors import InternalError


class RevokeTokenArgs(Args):
    jti: str | None = Field(default=None, description="The JWT's jti claim: refuse that one token.")
    agent: str | None = Field(default=None, description="Refuse every JWT whose agent claim names this agent.")
    reason: str = Field(default="", max_length=500, description="Why (shown by list_revoked_tokens).")
    undo: bool = Field(default=False, description="Lift the revocation instead.")


class ListRevokedArgs(Args):
    pass


def _revocations(services: Services) -> Revocations:
    if services.revocations is None:
        raise InternalError("this daemon was built without a revocation list")
    return services.revocations


def register(tools: ToolRegistry) -> None:
    @tools.tool(core=False, category="infrastructure", idempotent=True)
    async def revoke_token(services: Services, args: RevokeTokenArgs) -> dict[str, Any]:
        """Operator only: make the HTTP bridge refuse a JWT (by jti) or all of an agent's JWTs before they expire."""
        revocations = _revocations(services)
        if args.undo:
            return await revocations.unrevoke(current_session.get(), args.jti, args.agent)
        return await revocations.revoke(current_session.get(), args.jti, args.agent, args.reason)

    @tools.tool(core=False, category="infrastructure", read_only=True, idempotent=True)
    async def list_revoked_tokens(services: Services, args: ListRevokedArgs) -> dict[str, Any]:
        """Operator only: the JWT ids and agents the HTTP bridge refuses."""
        return _revocations(services).listing(current_session.get())
