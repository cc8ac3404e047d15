"""The composition root: open the store, build the services and the MCP server, serve the socket.

Read the daemon from here down. `run_daemon` is entered with the instance lock already held (see
`maild/__main__.py`) and returns when the daemon has shut down cleanly: socket unlinked first (so
new clients start a successor), connections closed, writer drained, WAL checkpointed.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from maild.archive.archiver import Archiver
from maild.archive.blobs import BlobStore
from maild.archive.mirror import Mirror
from maild.bridge import BridgeState, run_bridge
from maild.lifecycle import StartupError, remove_status, write_status
from maild.mcp_surface.context import Services
from maild.mcp_surface.dispatch import LeanDispatcher
from maild.mcp_surface.server import build_registries, sdk_factory
from maild.services.acks import AckDeadlines
from maild.services.agents import Agents
from maild.services.attachments import Attachments
from maild.services.build_slots import BuildSlots, with_slots
from maild.services.changes import ChangeFeed
from maild.services.contact_requests import Contacts
from maild.services.health import Health
from maild.services.lifecycle import Lifecycle
from maild.services.mail_views import MailViews
from maild.services.messaging import Messaging
from maild.services.metrics import ToolMetrics
from maild.services.projects import Projects
from maild.services.reservations import Reservations, release_all_of_agent
from maild.services.revocations import Revocations
from maild.services.search import Search
from maild.services.sessions import Sessions
from maild.services.siblings import Siblings
from maild.services.summaries import Summaries
from maild.services.waiting import MailWaiters
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


async def sweep_expired_reservations(reservations: Reservations, slots: BuildSlots, interval: float) -> None:
    """Release expired file reservations and build slots periodically (neither blocks anybody once
    expired, so this keeps state tidy and the archive showing their end)."""
    while True:
        await anyio.sleep(interval)
        for sweep in (reservations.sweep, slots.sweep):
            try:
                await sweep()
            except Exception:
                log.exception("lease sweep failed; retrying next interval")


async def auto_retire_idle_agents(lifecycle: Lifecycle, days: float, interval: float = 3600.0) -> None:
    """AGENT_AUTO_RETIRE_DAYS: retire agents idle that long, checked hourly (and once at start)."""
    if days <= 0:
        return  # off (the default)
    while True:
        try:
            retired = await lifecycle.auto_retire(days)
            if retired:
                log.info("auto-retired %d idle agent(s): %s", len(retired), ", ".join(retired))
        except Exception:
            log.exception("auto-retire sweep failed; retrying next interval")
        await anyio.sleep(interval)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


async def watch_state_dir(paths: MailboxPaths, interval: float, stop: anyio.Event) -> None:
    """Exit when our state dir is deleted or replaced (`rm -rf` of the root): a daemon serving files
    nobody can reach any more would otherwise live on, holding the mail of a dead mailbox."""
    original = _identity(paths.state_dir)
    while True:
        await anyio.sleep(interval)
        if _identity(paths.state_dir) != original:
            log.warning("%s was deleted or replaced: shutting down", paths.state_dir)
            stop.set()
            return


async def _wait_for_signal(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            stop.set()
            return


def build_services(store: Any, settings: Settings, paths: MailboxPaths, archiver: Archiver | None,
                   blobs: BlobStore, changes: ChangeFeed, instance: str, bridge: BridgeState | None,
                   mirror: Mirror | None = None) -> Services:
    """Every domain service over one store: the daemon's object graph, wired in one place."""
    sessions = Sessions(store)
    attachments = Attachments(store, settings, paths.root, blobs, paths.archive)
    summaries = Summaries(store, settings)
    waiters = MailWaiters(store, changes)
    acks = AckDeadlines(store, settings)
    siblings = Siblings(store, summaries.llm)
    metrics = ToolMetrics(store, enabled=settings.tool_metrics_enabled,
                          flush_seconds=settings.tool_metrics_flush_seconds)
    revocations = Revocations(store)

    def subsystem_health() -> dict[str, Any]:
        report: dict[str, Any] = {"llm": summaries.llm.statistics(), "instance": instance,
                                  "wait_for_mail": waiters.statistics(), "ack_deadlines": acks.statistics(),
                                  "tools": metrics.summary(),
                                  "siblings": siblings.statistics()}
        if bridge is not None:
            report["http"] = {**bridge.describe(), "revoked_tokens": revocations.statistics()}
        if archiver is not None:
            report.update(archiver.statistics())
            if mirror is not None:
                report["archive"]["mirror"] = mirror.statistics()
        return report

    agents = Agents(store, sessions, settings, paths.archive)
    sessions.on_hello = agents.bind_requested
    # agents must not import reservations (it imports agents); retiring also frees build slots
    agents.on_retire = with_slots(release_all_of_agent)
    sessions.on_hang_up.append(waiters.forget)
    return Services(
        settings=settings,
        projects=Projects(store),
        sessions=sessions,
        health=Health(store, sessions, paths.root, subsystem_health),
        agents=agents,
        messaging=Messaging(store, settings, attachments),
        views=MailViews(store, agents),
        store=store,
        archive_path=paths.archive,
        reservations=Reservations.from_settings(store, settings),
        search=Search(store, settings.search_rank_window, settings.message_visibility),
        summaries=summaries,
        attachments=attachments,
        lifecycle=Lifecycle(store),
        contacts=Contacts(store),
        changes=changes,
        waiters=waiters,
        build_slots=BuildSlots(store),
        acks=acks,
        metrics=metrics,
        paths=paths,
        siblings=siblings,
        revocations=revocations,
    )


def mirror_for(archiver: Archiver | None, paths: MailboxPaths, settings: Settings) -> Mirror | None:
    """The archive mirror when `archive_remote` is set; each group commit then triggers a (batched) push."""
    if archiver is None or not settings.archive_remote:
        return None
    mirror = Mirror(paths.archive, settings.archive_remote, settings.archive_push_interval_seconds)
    archiver.after_commit = mirror.notify
    return mirror


async def run_daemon(paths: MailboxPaths, settings: Settings, http_required: bool = False) -> None:
    """Serve until stopped. `http_required`: exit (StartupError) rather than run without the bridge."""
    socket_path = paths.socket
    instance = secrets.token_hex(8)
    bridge = BridgeState.from_settings(settings) if settings.http_enabled else None
    fatal: str | None = None
    async with open_store(paths.db, settings) as store:
        changes = ChangeFeed.following(store)  # what the web UI's live updates follow
        blobs = BlobStore(paths.blobs, fsync=settings.synchronous == "FULL")
        archiver = (
            Archiver(store, paths.archive, settings.git_author_name, settings.git_author_email, blobs,
                     commit_interval=settings.archive_commit_interval_seconds)
            if settings.archive_enabled
            else None
        )
        mirror = mirror_for(archiver, paths, settings)
        services = build_services(store, settings, paths, archiver, blobs, changes, instance, bridge, mirror)
        sessions = services.sessions
        await _before_serving(services)
        tools, resources = build_registries()
        sdk = sdk_factory(services, tools, resources)  # the SDK is imported when first needed
        dispatcher = LeanDispatcher(services, tools, resources)  # the HTTP bridge's stateless calls use it too
        lean = dispatcher if settings.transport_fast_path else None
        idle = IdleTimer(settings.idle_timeout_seconds)
        transport = UnixTransport(sdk, sessions, ConnectionCounter(idle.on_change), lean)
        stop = anyio.Event()

        async def stop_when_idle() -> None:
            await idle.wait_idle()
            log.info("idle for %.0f s with no connections: shutting down", settings.idle_timeout_seconds)
            stop.set()

        publish_status = _status_publisher(paths, {
            "pid": os.getpid(),
            # Tells this daemon apart from any other (another maild answering on "our" HTTP port).
            "instance": instance,
            "socket": str(socket_path),
            "version": __version__,
            "started_at": services.health.started_at,
            "root": str(paths.root),
            "backend": _backend_name(),
        }, bridge)

        async with anyio.create_task_group() as tg:
            await tg.start(transport.serve, socket_path)
            publish_status()
            log.info("maild %s ready (pid %d, root %s)", __version__, os.getpid(), paths.root)
            _start_background(tg, services, archiver, mirror, paths, stop)
            http_stop, http_done = anyio.Event(), anyio.Event()
            if bridge is not None:
                app = _bridge_app(services, tools, sdk()[0], dispatcher, changes, paths, instance)
                await tg.start(run_bridge, _http_server(app, settings), settings, bridge, http_stop, http_done)
                bridge.on_change = publish_status
                publish_status()
                if bridge.state == "failed" and http_required:
                    fatal = f"the HTTP bridge could not start: {bridge.error}"
                    stop.set()
            if bridge is None or bridge.state == "failed":  # a serving bridge stays up; others idle out
                tg.start_soon(stop_when_idle)
            await stop.wait()
            # Lame duck: unlink first so new clients start a successor instead of talking to us.
            socket_path.unlink(missing_ok=True)
            if bridge is not None:
                await _stop_bridge(http_stop, http_done)
            tg.cancel_scope.cancel()
        remove_status(paths)
    log.info("maild stopped")
    if fatal is not None:
        raise StartupError(fatal)


async def _before_serving(services: Services) -> None:
    """State the first request must already see: nobody connected yet (whatever a crashed daemon
    left), the tool metrics the last daemon kept, and the revoked tokens."""
    await services.sessions.mark_all_disconnected()
    await services.metrics.load()
    if services.revocations is not None:
        await services.revocations.load()


def _start_background(tg: anyio.abc.TaskGroup, services: Services, archiver: Archiver | None,
                      mirror: Mirror | None, paths: MailboxPaths, stop: anyio.Event) -> None:
    """The daemon's background tasks: signals, the state-dir watch, the archiver (and its mirror),
    the mail waiters' router, the sibling scorer, the shared revoked-token list, the sweeps and the
    ack-deadline scanner."""
    settings = services.settings
    tg.start_soon(_wait_for_signal, stop)
    tg.start_soon(watch_state_dir, paths, settings.root_check_seconds, stop)
    if archiver is not None:
        tg.start_soon(archiver.run)
    if mirror is not None:
        tg.start_soon(mirror.run)
    tg.start_soon(services.waiters.run)
    if services.attachments is not None:
        tg.start_soon(services.attachments.converter.run)  # deferred image conversions (and a crash's leftovers)
    tg.start_soon(services.siblings.run)
    tg.start_soon(services.metrics.run)  # flushes periodically and at shutdown
    if settings.http_enabled:
        _share_revocations(tg, services)
    tg.start_soon(sweep_expired_reservations, services.reservations, services.build_slots,
                  settings.reservation_sweep_seconds)
    tg.start_soon(auto_retire_idle_agents, services.lifecycle, settings.agent_auto_retire_days)
    if settings.ack_ttl_enabled and services.acks is not None:
        tg.start_soon(services.acks.run)


async def _stop_bridge(stop: anyio.Event, done: anyio.Event) -> None:
    """The bridge's server (uvicorn or hypercorn) stops through `stop`, not cancellation; give it a few seconds."""
    stop.set()
    with anyio.move_on_after(5):
        await done.wait()


def _bridge_app(services: Services, tools: Any, server: Any, dispatcher: LeanDispatcher, changes: ChangeFeed,
                paths: MailboxPaths, instance: str) -> Any:
    """The HTTP bridge (and the web mailbox on it); imported only when HTTP is on."""
    from maild.transport.http.app import build_app
    from maild.web.app import build_web

    settings = services.settings
    readonly = {s.name for s in tools.all() if s.read_only} | set(csv(settings.http_rbac_readonly_tools))
    web = build_web(services, changes, settings, paths.state_dir) if settings.web_enabled else None
    revocations = services.revocations
    return build_app(server, settings, lambda: readonly, readiness=services.health.check, lean=dispatcher, web=web,
                     instance=instance, revoked=revocations.is_revoked if revocations is not None else None)


def _share_revocations(tg: anyio.abc.TaskGroup, services: Services) -> None:
    """With Redis-shared rate limits, share the revoked-token list there too (bridges on one Redis
    trust the same tokens)."""
    settings = services.settings
    if settings.http_rate_limit_backend != "redis" or services.revocations is None:
        return
    from maild.transport.http.denylist import RedisDenyList

    try:
        shared = RedisDenyList(settings.http_rate_limit_redis_url)
    except ImportError:
        return  # the bridge's rate limiter reports the missing redis package
    services.revocations.shared = shared
    tg.start_soon(shared.run, services.revocations)


def _http_server(app: Any, settings: Settings) -> Callable[[anyio.Event, anyio.Event], Awaitable[None]]:
    async def serve(stop: anyio.Event, done: anyio.Event) -> None:
        from maild.transport.http.server import serve_http

        await serve_http(app, settings, stop, done)

    return serve


def _status_publisher(paths: MailboxPaths, status: dict[str, Any], bridge: BridgeState | None) -> Callable[[], None]:
    """(Re)write the status file with the bridge's current state."""

    def publish() -> None:
        if bridge is not None:
            status["http"] = bridge.describe()
        try:
            write_status(paths, status)
        except OSError as exc:  # a full disk must not stop the daemon; clients find it by its socket
            log.warning("could not write %s: %s", paths.status_file, exc)

    return publish


def _backend_name() -> str:
    import sniffio

    return sniffio.current_async_library()
