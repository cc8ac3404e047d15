"""`health_check`: a live report (DB reachable, archive queue depth, uptime, version, sessions).

Unlike upstream's, which echoed settings, every figure here is measured when asked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maild.services.sessions import Sessions
from maild.store import Store, utcnow
from maild.store.outbox import depth
from shared import __version__


class Health:
    def __init__(
        self,
        store: Store,
        sessions: Sessions,
        root: Path,
        extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._store = store
        self._sessions = sessions
        self._root = root
        self._started_monotonic = time.monotonic()
        self.started_at = utcnow()
        self._extra = extra  # later subsystems (archive, HTTP bridge) report through this

    async def check(self) -> dict[str, Any]:
        db_ok = True
        queue: int | None = None
        try:
            # A count of the archive's outbox: microseconds, so no reader-thread round trip.
            queue = await self._store.read_inline(depth)
        except Exception:
            db_ok = False
        report: dict[str, Any] = {
            "status": "ok" if db_ok else "degraded",
            "version": __version__,
            "pid": os.getpid(),
            "root": str(self._root),
            "started_at": self.started_at,
            "uptime_seconds": round(time.monotonic() - self._started_monotonic, 3),
            "database": {"ok": db_ok, **self._store.statistics()},
            "archive": {"queue_depth": queue},
            "sessions": self._sessions.statistics(),
        }
        if self._extra is not None:
            for key, value in self._extra().items():
                if isinstance(value, dict) and isinstance(report.get(key), dict):
                    report[key].update(value)
                else:
                    report[key] = value
            if report["archive"].get("ok") is False:
                report["status"] = "degraded"
        return report
