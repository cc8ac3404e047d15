"""File reservation tools, the guard's check, the reservations resource, and the workflow macros."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from maild.mcp_surface.context import Services
from maild.mcp_surface.project_default import ProjectKey, project_of
from maild.mcp_surface.registry import Args, ResourceRegistry, ToolRegistry
from maild.services.mail_views import to_bool
from maild.services.sessions import current_session
from shared.errors import InvalidArgument


class ReserveArgs(Args):
    project_key: str | None = ProjectKey
    paths: list[str] = Field(description="Globs relative to the repo, e.g. src/auth/**.")
    agent_name: str | None = None
    ttl_seconds: int = Field(3600, description=">= 60")
    exclusive: bool = True
    reason: str = ""
    fail_on_conflict: bool = Field(False, description="Grant nothing if any exclusive conflict exists.")
    registration_token: str | None = None


class ReleaseArgs(Args):
    project_key: str | None = ProjectKey
    agent_name: str | None = None
    paths: list[str] | None = None
    file_reservation_ids: list[int] | None = None
    registration_token: str | None = None


class RenewArgs(ReleaseArgs):
    extend_seconds: int = 1800


class ForceReleaseArgs(Args):
    project_key: str | None = ProjectKey
    file_reservation_id: int
    agent_name: str | None = None
    notify_previous: bool = True
    note: str = ""
    registration_token: str | None = None


class GuardCheckArgs(Args):
    paths: list[str]
    agent_name: str | None = None
    project_key: str | None = Field(None, description="Only this project's reservations (the hook's repo).")


class StartSessionArgs(Args):
    human_key: str | None = ProjectKey
    program: str
    model: str
    task_description: str = ""
    agent_name: str | None = None
    file_reservation_paths: list[str] | None = None
    file_reservation_reason: str = "macro-session"
    file_reservation_ttl_seconds: int = 3600
    inbox_limit: int = 10


class PrepareThreadArgs(Args):
    project_key: str | None = ProjectKey
    thread_id: str
    program: str
    model: str
    agent_name: str | None = None
    task_description: str = ""
    register_if_missing: bool = True
    include_examples: bool = True
    inbox_limit: int = 10
    include_inbox_bodies: bool = False
    llm_mode: bool = True
    llm_model: str | None = None
    registration_token: str | None = Field(None, description="Needed only to act as another agent.")


class ReservationCycleArgs(Args):
    project_key: str | None = ProjectKey
    paths: list[str]
    agent_name: str | None = None
    ttl_seconds: int = 3600
    exclusive: bool = True
    reason: str = "macro-file_reservation"
    auto_release: bool = False


def register(tools: ToolRegistry, resources: ResourceRegistry) -> None:
    @tools.tool(core=False, category="file_reservations")
    async def file_reservation_paths(services: Services, args: ReserveArgs) -> dict[str, Any]:
        """Reserve path globs before editing them (advisory lease, default 1 h). Reports conflicts with
        holder, pattern and expiry; with fail_on_conflict=true grants nothing if any exclusive one exists."""
        key = await project_of(services, args.project_key)
        return await services.reservations.reserve(
            current_session.get(), key, args.agent_name, args.registration_token, args.paths,
            args.ttl_seconds, args.exclusive, args.reason, args.fail_on_conflict,
        )

    @tools.tool(core=False, category="file_reservations", idempotent=True)
    async def release_file_reservations(services: Services, args: ReleaseArgs) -> dict[str, Any]:
        """Release your reservations (all, or those matching paths / file_reservation_ids)."""
        key = await project_of(services, args.project_key)
        return await services.reservations.release(
            current_session.get(), key, args.agent_name, args.registration_token, args.paths,
            args.file_reservation_ids,
        )

    @tools.tool(core=False, category="file_reservations")
    async def renew_file_reservations(services: Services, args: RenewArgs) -> dict[str, Any]:
        """Extend your reservations by extend_seconds (keeps exclusive and reason)."""
        key = await project_of(services, args.project_key)
        return await services.reservations.renew(
            current_session.get(), key, args.agent_name, args.registration_token,
            args.extend_seconds, args.paths, args.file_reservation_ids,
        )

    @tools.tool(core=False, category="file_reservations")
    async def force_release_file_reservation(services: Services, args: ForceReleaseArgs) -> dict[str, Any]:
        """Release another agent's reservation once it is stale (holder inactive, no recent mail or file
        changes); notifies the holder. Refused with RESERVATION_ACTIVE otherwise."""
        key = await project_of(services, args.project_key)
        return await services.reservations.force_release(
            current_session.get(), key, args.agent_name, args.registration_token,
            args.file_reservation_id, args.notify_previous, args.note,
        )

    @tools.tool(core=False, category="infrastructure", read_only=True)
    async def guard_check(services: Services, args: GuardCheckArgs) -> dict[str, Any]:
        """Which of these repo paths are exclusively reserved by another active agent (the git hook's check)."""
        session = current_session.get()
        me = args.agent_name
        if me is None and session is not None and session.agent_id is not None:
            me = await services.agents.name_of(session.agent_id)  # your own leases are not conflicts
        return {"conflicts": await services.reservations.check_paths(me, args.paths, args.project_key)}

    @resources.resource("resource://file_reservations/{project}", "file_reservations")
    async def file_reservations(services: Services, project: str, active_only: str | None = None) -> Any:
        """A project's reservations (expired ones are marked); ?active_only=true for live ones only."""
        return await services.reservations.listing(project, to_bool(active_only, "active_only"))
    register_macros(tools)


def register_macros(tools: ToolRegistry) -> None:
    @tools.tool(core=False, category="workflow_macros")
    async def macro_start_session(services: Services, args: StartSessionArgs) -> dict[str, Any]:
        """Start of a session in one call: ensure project, register, reserve paths, fetch the inbox."""
        session = current_session.get()
        key = await project_of(services, args.human_key)
        project = await services.projects.ensure(key)
        agent = await services.agents.register(
            session, key, args.program, args.model, args.agent_name, args.task_description, "auto",
            force_reclaim=False, token=None,
        )
        token = agent.get("registration_token")
        reservations: dict[str, Any] = {"granted": [], "conflicts": []}
        if args.file_reservation_paths:
            reservations = await services.reservations.reserve(
                session, key, agent["name"], token, args.file_reservation_paths,
                args.file_reservation_ttl_seconds, True, args.file_reservation_reason, False,
            )
        inbox = await services.messaging.fetch_inbox(
            session, key, agent["name"], token, limit=args.inbox_limit, urgent_only=False,
            include_bodies=False, since_ts=None,
        )
        return {"project": project, "agent": agent, "file_reservations": reservations, "inbox": inbox["result"],
                "unread_count": inbox["unread_count"]}

    @tools.tool(core=False, category="workflow_macros")
    async def macro_prepare_thread(services: Services, args: PrepareThreadArgs) -> dict[str, Any]:
        """Join a thread in one call: register (unless register_if_missing=false), fetch the inbox and
        summarise the thread. The project must exist."""
        key = await project_of(services, args.project_key)
        session = current_session.get()
        project = await services.projects.find(key)
        token = args.registration_token
        if args.register_if_missing:
            agent = await services.agents.register(
                session, key, args.program, args.model, args.agent_name, args.task_description,
                "auto", force_reclaim=False, token=token,
            )
            token = agent.get("registration_token") or token
        elif args.agent_name is None and (session is None or session.agent_id is None):
            raise InvalidArgument(
                "agent_name is required when register_if_missing=false and this session is not bound to an "
                "agent; pass agent_name, or let the macro register you", data={"parameter": "agent_name"},
            )
        inbox = await services.messaging.fetch_inbox(
            session, key, args.agent_name, token, limit=args.inbox_limit, urgent_only=False,
            include_bodies=args.include_inbox_bodies, since_ts=None,
        )
        if not args.register_if_missing:
            agent = await services.agents.whois(key, inbox["agent"], False, 0)
        thread = await services.summaries.summarize_thread(
            key, args.thread_id, viewer=agent["id"], include_examples=args.include_examples,
            llm_mode=args.llm_mode, llm_model=args.llm_model,
        )
        return {
            "project": project,
            "agent": agent,
            "thread": {"thread_id": thread["thread_id"], "summary": thread["summary"],
                       "examples": thread.get("examples", []), "total_messages": thread["summary"]["total_messages"]},
            "inbox": inbox["result"],
            "unread_count": inbox["unread_count"],
        }

    @tools.tool(core=False, category="workflow_macros")
    async def macro_file_reservation_cycle(services: Services, args: ReservationCycleArgs) -> dict[str, Any]:
        """Reserve paths and, with auto_release=true, release them again in the same call."""
        key = await project_of(services, args.project_key)
        session = current_session.get()
        reserved = await services.reservations.reserve(
            session, key, args.agent_name, None, args.paths, args.ttl_seconds, args.exclusive,
            args.reason, False,
        )
        released = None
        if args.auto_release:
            released = await services.reservations.release(
                session, key, args.agent_name, None, [g["path_pattern"] for g in reserved["granted"]],
                None,
            )
        return {"file_reservations": reserved, "released": released}


class InstallGuardArgs(Args):
    project_key: str | None = ProjectKey
    code_repo_path: str = Field(description="The git repository to protect.")


class UninstallGuardArgs(Args):
    code_repo_path: str


def register_guard(tools: ToolRegistry) -> None:
    from pathlib import Path

    from shared import guard_install as guard

    @tools.tool(core=False, category="infrastructure")
    async def install_precommit_guard(services: Services, args: InstallGuardArgs) -> dict[str, Any]:
        """Install the pre-commit guard (chain runner; keeps an existing hook) in a repository."""
        key = await project_of(services, args.project_key)
        return guard.install(Path(args.code_repo_path), services.archive_path.parent.parent,
                             project_key=key)

    @tools.tool(core=False, category="infrastructure")
    async def uninstall_precommit_guard(services: Services, args: UninstallGuardArgs) -> dict[str, Any]:
        """Remove the guard's hooks, restoring the previous ones."""
        return guard.uninstall(Path(args.code_repo_path))
