"""The contact tools' service: request_contact, respond_contact, list_contacts, set_contact_policy
and macro_contact_handshake. The rules themselves (policies, links, enforcement) are in contacts.py;
this module sits above messaging because a request and a handshake also send mail.
"""

from __future__ import annotations

from typing import Any

from maild.services import agents as ag
from maild.services.contacts import (
    POLICIES,
    REQUEST_TTL_SECONDS,
    contact_dict,
    intro_body,
    request_in,
    respond_in,
    target_agent,
)
from maild.services.messaging import Outgoing, send_in
from maild.services.projects import find_in, validate_project_key
from maild.services.sessions import Session
from maild.store import Connection, Store, utcnow
from maild.store.outbox import enqueue
from shared.errors import AuthenticationRequired, InvalidArgument


class Contacts:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def request(self, session: Session | None, project_key: str, from_agent: str | None, to_agent: str,
                      reason: str, ttl_seconds: int, token: str | None) -> dict[str, Any]:
        """request_contact: a pending link plus an ack_required intro message to the target."""
        key = validate_project_key(project_key)

        def unit(conn: Connection) -> dict[str, Any]:
            find_in(conn, key)
            sender = ag.acting_agent(conn, session, from_agent, token, param="from_agent")
            target = target_agent(conn, to_agent, "to_agent")
            link = request_in(conn, sender, target, reason[:512], ttl_seconds)
            sent = None
            if link["status"] == "pending":
                body = intro_body(sender[1], target[1], reason[:512])
                out = Outgoing(project_key=target[13], subject=f"Contact request from {sender[1]}", body_md=body,
                               to=[target[1]], ack_required=True, contact_intro=True)
                sent = send_in(conn, session, out, sender[1], token, False)["deliveries"][0]["payload"]["id"]
            return {**link, "intro_message_id": sent}

        return await self._store.write(unit)

    async def respond(self, session: Session | None, project_key: str, to_agent: str | None, from_agent: str,
                      accept: bool, ttl_seconds: int, token: str | None) -> dict[str, Any]:
        key = validate_project_key(project_key)

        def unit(conn: Connection) -> dict[str, Any]:
            find_in(conn, key)
            me = ag.acting_agent(conn, session, to_agent, token, param="to_agent")
            requester = target_agent(conn, from_agent, "from_agent")
            return respond_in(conn, me, requester, accept, ttl_seconds)

        return await self._store.write(unit)

    async def list(self, session: Session | None, project_key: str, agent_name: str | None,
                   token: str | None) -> dict[str, Any]:
        key = validate_project_key(project_key)

        def unit(conn: Connection) -> dict[str, Any]:
            find_in(conn, key)
            me = ag.acting_agent(conn, session, agent_name, token)
            pairs: list[Any] = conn.execute(
                "SELECT from_agent_id, to_agent_id FROM contacts WHERE from_agent_id = ? OR to_agent_id = ?"
                " ORDER BY updated_ts DESC", (me[0], me[0]),
            ).fetchall()
            now = utcnow()
            links = []
            for src, dst in pairs:
                link = contact_dict(conn, src, dst)
                other = link["to"] if src == me[0] else link["from"]
                expired = link["expires_ts"] is not None and link["expires_ts"] <= now
                links.append({"agent": other, "direction": "outgoing" if src == me[0] else "incoming",
                              "status": "expired" if expired else link["status"], "reason": link["reason"],
                              "updated_ts": link["updated_ts"], "expires_ts": link["expires_ts"]})
            return {"agent": me[1], "contact_policy": me[9], "contacts": links}

        return await self._store.read(unit)

    async def set_policy(self, session: Session | None, project_key: str, agent_name: str | None, policy: str,
                         token: str | None) -> dict[str, Any]:
        key = validate_project_key(project_key)
        if policy not in POLICIES:
            raise InvalidArgument(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}",
                                  data={"parameter": "policy"})

        def unit(conn: Connection) -> dict[str, Any]:
            find_in(conn, key)
            me = ag.acting_agent(conn, session, agent_name, token)
            now = utcnow()
            conn.execute("UPDATE agents SET contact_policy = ? WHERE id = ?", (policy, me[0]))
            enqueue(conn, "agent", me[13], {"agent": ag.agent_dict(ag.get_by_id(conn, me[0]))})
            return {"agent": me[1], "contact_policy": policy, "updated_ts": now}

        return await self._store.write(unit)

    async def handshake(self, session: Session | None, project_key: str, requester: str | None, target: str,
                        reason: str, auto_accept: bool, target_token: str | None, token: str | None,
                        welcome_subject: str | None, welcome_body: str | None, ttl_seconds: int) -> dict[str, Any]:
        """macro_contact_handshake: request, approve when the caller may act as the target, welcome."""
        key = validate_project_key(project_key)

        def unit(conn: Connection) -> dict[str, Any]:
            find_in(conn, key)
            sender = ag.acting_agent(conn, session, requester, token, param="agent_name")
            other = target_agent(conn, target, "to_agent")
            link = request_in(conn, sender, other, reason[:512], REQUEST_TTL_SECONDS)
            approved = None
            if auto_accept:
                if not (ag.token_matches(conn, other[0], target_token) or ag.is_operator(session)):
                    raise AuthenticationRequired(
                        f"auto_accept approves on behalf of {other[1]}: pass target_registration_token "
                        f"({other[1]}'s token), or let {other[1]} call respond_contact",
                        data={"parameter": "target_registration_token"},
                    )
                approved = respond_in(conn, other, sender, True, ttl_seconds)
            welcome = None
            if welcome_body:
                out = Outgoing(project_key=other[13], subject=(welcome_subject or f"Hello from {sender[1]}")[:512],
                               body_md=welcome_body, to=[other[1]], contact_intro=True)
                welcome = send_in(conn, session, out, sender[1], token, False)["deliveries"][0]["payload"]["id"]
            return {"request": link, "response": approved, "welcome_message_id": welcome}

        return await self._store.write(unit)
