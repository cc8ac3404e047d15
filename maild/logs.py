"""Logging for maild: always to `.mcp_mail/maild.log` (rotated at a size cap); Rich on a terminal;
JSON lines on request."""

from __future__ import annotations

import json
import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class RotatingLog(RotatingFileHandler):
    """A size-capped log. An auto-started daemon's stderr is the log file too (tracebacks of a crash
    land there): after a rollover, stderr follows to the new file instead of growing the old one."""

    def doRollover(self) -> None:  # noqa: N802 - overrides the stdlib name
        stderr_is_log = _same_file(2, self.baseFilename)
        super().doRollover()
        if stderr_is_log and self.stream is not None:
            try:
                sys.stderr.flush()
                os.dup2(self.stream.fileno(), 2)
            except (OSError, ValueError):
                pass


def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), Path(path).stat()
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def configure_logging(
    log_file: Path, level: str, as_json: bool, max_bytes: int = 10 * 1024 * 1024, backups: int = 3
) -> None:
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    file_handler = RotatingLog(log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    file_handler.setFormatter(
        JsonLines() if as_json else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(file_handler)
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        root.addHandler(RichHandler(rich_tracebacks=True, show_path=False))
    # The SDK logs every request at INFO; keep our log about our daemon.
    for noisy in ("mcp", "httpx", "hypercorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
