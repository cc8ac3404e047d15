"""The composition root: open the store, build the services and the MCP server, serve the socket.

Read the daemon from here down. `run_daemon` is entered with the instance lock already held (see
`maild/__main__.py`) and returns when the daemon has shut down cleanly: socket unlinked first (so
new clients start a successor), connections closed, writer drained, WAL checkpointed.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from maild.archive.archiver import Archiver
from maild.archive.mirror import Mirror
from maild.lifecycle import remove_status, write_status
from maild.mcp_surface.context import Services
from maild.mcp_surface.dispatch import LeanDispatcher
from maild.mcp_surface.server import build_registries, sdk_factory
from maild.services.agents import Agents
from maild.services.changes import ChangeFeed
from maild.services.health import Health
from maild.services.mail_views import MailViews
from maild.services.messaging import Messaging
from maild.services.projects import Projects
from maild.services.reservations import Reservations
from maild.services.search import Search
from maild.services.sessions import Sessions
from maild.services.summaries import Summaries
from maild.store import open_store
from maild.transport.unix import ConnectionCounter, UnixTransport
from shared import __version__
from shared.config import Settings, csv
from shared.paths import MailboxPaths

log = logging.getLogger(__name__)


@dataclass
class IdleTimer:
    """Fires when there have been no connections for `timeout` seconds."""

    timeout: float
    count: int = 0
    idle_since: float = field(default_factory=anyio.current_time)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    def on_change(self, count: int) -> None:
        self.count = count
        if count == 0:
            self.idle_since = anyio.current_time()
        self._changed.set()

    async def wait_idle(self) -> None:
        while True:
            self._changed = anyio.Event()
            if self.count == 0:
                remaining = self.idle_since + self.timeout - anyio.current_time()
                if remaining <= 0:
                    return
                with anyio.move_on_after(remaining):
                    await self._changed.wait()
            else:
                await self._changed.wait()


async def sweep_expired_reservations(reservations: Reservations, interval: float) -> None:
    """Release expired leases periodically (reads also ignore them, so this only keeps state tidy)."""
    while True:
        await anyio.sleep(interval)
        try:
            await reservations.sweep()
        except Exception:
            log.exception("reservation sweep failed; retrying next interval")


async def _wait_for_signal(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            stop.set()
            return


def build_services(store: Any, settings: Settings, paths: MailboxPaths, archiver: Archiver | None,
                   mirror: Mirror | None = None) -> Services:
    """Every domain service over one store: the daemon's object graph, wired in one place."""
    sessions = Sessions(store)
    summaries = Summaries(store, settings)

    def subsystem_health() -> dict[str, Any]:
        report: dict[str, Any] = {"llm": summaries.llm.statistics()}
        if archiver is not None:
            report.update(archiver.statistics())
            if mirror is not None:
                report["archive"]["mirror"] = mirror.statistics()
        return report

    agents = Agents(store, sessions, settings, paths.archive)
    sessions.on_hello = agents.bind_requested
    return Services(
        settings=settings,
        projects=Projects(store),
        sessions=sessions,
        health=Health(store, sessions, paths.root, subsystem_health),
        agents=agents,
        messaging=Messaging(store, settings),
        views=MailViews(store, agents),
        store=store,
        archive_path=paths.archive,
        reservations=Reservations.from_settings(store, settings),
        search=Search(store, settings.search_rank_window),
        summaries=summaries,
    )


def mirror_for(archiver: Archiver | None, paths: MailboxPaths, settings: Settings) -> Mirror | None:
    """The archive mirror when `archive_remote` is set; each group commit then triggers a (batched) push."""
    if archiver is None or not settings.archive_remote:
        return None
    mirror = Mirror(paths.archive, settings.archive_remote, settings.archive_push_interval_seconds)
    archiver.after_commit = mirror.notify
    return mirror


async def run_daemon(paths: MailboxPaths, settings: Settings) -> None:
    socket_path = paths.socket
    async with open_store(paths.db, settings) as store:
        changes = ChangeFeed.following(store)  # what the web UI's live updates follow
        archiver = (
            Archiver(store, paths.archive, settings.git_author_name, settings.git_author_email)
            if settings.archive_enabled
            else None
        )
        mirror = mirror_for(archiver, paths, settings)
        services = build_services(store, settings, paths, archiver, mirror)
        sessions, health = services.sessions, services.health
        await sessions.mark_all_disconnected()
        tools, resources = build_registries()
        sdk = sdk_factory(services, tools, resources)  # the SDK is imported when first needed
        dispatcher = LeanDispatcher(services, tools, resources)  # the HTTP bridge's stateless calls use it too
        lean = dispatcher if settings.transport_fast_path else None
        idle = IdleTimer(settings.idle_timeout_seconds)
        transport = UnixTransport(sdk, sessions, ConnectionCounter(idle.on_change), lean)
        stop = anyio.Event()

        def bridge_app() -> Any:
            """The HTTP bridge (and the web mailbox on it); imported only when HTTP is on."""
            from maild.transport.http.app import build_app
            from maild.web.app import build_web

            readonly = {s.name for s in tools.all() if s.read_only} | set(csv(settings.http_rbac_readonly_tools))
            web = build_web(services, changes, settings, paths.state_dir) if settings.web_enabled else None
            return build_app(sdk()[0], settings, lambda: readonly, readiness=health.check, lean=dispatcher, web=web)

        async def stop_when_idle() -> None:
            await idle.wait_idle()
            log.info("idle for %.0f s with no connections: shutting down", settings.idle_timeout_seconds)
            stop.set()

        async with anyio.create_task_group() as tg:
            await tg.start(transport.serve, socket_path)
            write_status(
                paths,
                {
                    "pid": os.getpid(),
                    "socket": str(socket_path),
                    "version": __version__,
                    "started_at": health.started_at,
                    "root": str(paths.root),
                    "backend": _backend_name(),
                },
            )
            log.info("maild %s ready (pid %d, root %s)", __version__, os.getpid(), paths.root)
            tg.start_soon(_wait_for_signal, stop)
            if archiver is not None:
                tg.start_soon(archiver.run)
            if mirror is not None:
                tg.start_soon(mirror.run)
            tg.start_soon(sweep_expired_reservations, services.reservations, settings.reservation_sweep_seconds)
            http_stop, http_done = anyio.Event(), anyio.Event()
            if settings.http_enabled:
                from maild.transport.http.app import serve_http

                await tg.start(serve_http, bridge_app(), settings, http_stop, http_done)
            if not settings.http_enabled:  # an HTTP server stays up; only socket-only daemons idle out
                tg.start_soon(stop_when_idle)
            await stop.wait()
            # Lame duck: unlink first so new clients start a successor instead of talking to us.
            socket_path.unlink(missing_ok=True)
            if settings.http_enabled:
                http_stop.set()
                with anyio.move_on_after(5):
                    await http_done.wait()
            tg.cancel_scope.cancel()
        remove_status(paths)
    log.info("maild stopped")


def _backend_name() -> str:
    import sniffio

    return sniffio.current_async_library()
