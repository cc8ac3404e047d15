"""The HTTP bridge's life inside the daemon: bind check, supervision, and the state it reports.

A bridge that cannot bind (a port someone else holds) is a failed bridge with a clear error in the
log, the status file and health_check; the daemon keeps serving its Unix socket (issue 13: it used
to die with an "Address already in use" traceback, taking mail down with it). The ASGI app itself
and the server loop live in maild/transport/http/; this module only starts, watches and reports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from shared.config import HTTP_NO_AUTH_WARNING, Settings, http_auth_methods

log = logging.getLogger(__name__)

@dataclass
class BridgeState:
    host: str
    port: int
    path: str
    auth: list[str] = field(default_factory=list)
    state: str = "starting"  # starting | serving | failed | stopped
    error: str | None = None
    on_change: Callable[[], None] | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> BridgeState:
        return cls(settings.http_host, settings.http_port, settings.http_path, http_auth_methods(settings))

    def set(self, state: str, error: str | None = None) -> None:
        self.state, self.error = state, error
        if self.on_change is not None:
            self.on_change()

    def describe(self) -> dict[str, Any]:
        url_host = f"[{self.host}]" if ":" in self.host else self.host
        return {
            "state": self.state,
            "host": self.host,
            "port": self.port,
            "url": f"http://{url_host}:{self.port}{self.path}",
            "auth": self.auth,
            "error": self.error,
        }


def check_bind(settings: Settings) -> None:
    """Bind (and release) the bridge's address exactly as hypercorn will: OSError if it cannot."""
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{settings.http_host}:{settings.http_port}"]
    sockets = config.create_sockets()
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets):
        sock.close()


def _bind_error(settings: Settings, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return (
        f"cannot listen on {settings.http_host}:{settings.http_port}: {reason}; another program holds it "
        "or the address is not local. Pick another port (mailctl serve-http --port N)"
    )


async def run_bridge(
    serve: Callable[[anyio.Event, anyio.Event], Any],
    settings: Settings,
    state: BridgeState,
    stop: anyio.Event,
    done: anyio.Event,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the bridge until `stop`; `started` once it is serving or has failed (never raises)."""
    try:
        check_bind(settings)
    except OSError as exc:
        state.set("failed", _bind_error(settings, exc))
        log.error("HTTP bridge failed: %s. maild keeps serving its Unix socket", state.error)  # noqa: TRY400 - one line
        done.set()
        task_status.started()
        return
    if not state.auth:
        log.warning("%s", HTTP_NO_AUTH_WARNING)
    state.set("serving")
    task_status.started()
    try:
        await serve(stop, done)
    except OSError as exc:  # lost a race for the port after the check
        state.set("failed", _bind_error(settings, exc))
        log.error("HTTP bridge failed: %s. maild keeps serving its Unix socket", state.error)  # noqa: TRY400 - one line
    except Exception as exc:  # the top of the bridge task: the daemon outlives its bridge
        log.exception("HTTP bridge failed; maild keeps serving its Unix socket")
        state.set("failed", f"{type(exc).__name__}: {exc}")
    else:
        state.set("stopped")
    finally:
        done.set()
