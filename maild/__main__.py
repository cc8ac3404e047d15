"""`maild`: run the daemon for one mailbox root (normally auto-started by `mailctl`).

Takes the single-instance lock before importing anything heavy: a racing second daemon exits 0
within milliseconds. Start-up failures (unwritable dir, corrupt or future database, a full disk)
print one actionable line to stderr (and the log) and exit 2; never a traceback, never a silent
reset. A client that auto-starts us passes `--report-fd`: that line goes there too, whole, since
the log may be unwritable.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable

from maild.lifecycle import InstanceLock, StartupError, exclude_from_user_repo, prepare_state_dir
from shared import __version__
from shared.config import ConfigError, Settings, load_settings
from shared.errors import MailError
from shared.paths import MailboxPaths, resolve_root

EXIT_STARTUP_FAILED = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="maild",
        description="Agent Mail daemon: serves one mailbox root on a Unix socket. "
        "Usually started for you by `mailctl`; run it by hand to watch its log in a terminal.",
        epilog="example: maild --root ~/src/myrepo --idle-timeout 600",
    )
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "rebuild"],
                        help="serve (default), or rebuild the database from the archive (daemon stopped)")
    parser.add_argument("--root", help="mailbox root (default: $AGENT_MAIL_ROOT or the git top-level)")
    parser.add_argument("--idle-timeout", type=float, help="seconds without connections before exiting")
    parser.add_argument("--log-json", action="store_true", default=None, help="log JSON lines")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--backend", choices=["asyncio", "trio"], help="async backend (default asyncio)")
    parser.add_argument("--http", action="store_true", default=None, help="also serve the HTTP bridge")
    parser.add_argument("--http-host", help="HTTP bridge address (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, help="HTTP bridge port (default 8765)")
    parser.add_argument("--http-required", action="store_true",
                        help="exit (status 2) if the HTTP bridge cannot start, instead of serving the socket only")
    parser.add_argument("--report-fd", type=int, help=argparse.SUPPRESS)  # set by an auto-starting client
    parser.add_argument("--from", dest="from_url", metavar="URL",
                        help="rebuild: first fetch the archive from this git mirror (clone it when absent)")
    parser.add_argument("--version", action="version", version=f"maild {__version__}")
    return parser.parse_args(argv)


def _reporter(fd: int | None) -> Callable[[str], None]:
    def report(line: str) -> None:
        if fd is not None:
            with contextlib.suppress(OSError):  # the client gave up waiting; the log may still have it
                os.write(fd, line.encode("utf-8", "replace") + b"\n")
        with contextlib.suppress(OSError):  # stderr is the log file: on a full disk, it cannot take it
            print(f"maild: {line}", file=sys.stderr)

    return report


def _run(run: Callable[..., object], *args: object, **kwargs: object) -> None:
    """run(*args, **kwargs); with AGENT_MAIL_PROFILE=FILE, under cProfile (main thread CPU time, not
    wall time: benches run on loaded machines), the profile dumped to FILE at exit."""
    profile = os.environ.get("AGENT_MAIL_PROFILE")
    if not profile:
        run(*args, **kwargs)
        return
    import cProfile
    import time

    profiler = cProfile.Profile(time.thread_time)
    try:
        profiler.runcall(run, *args, **kwargs)
    finally:
        profiler.dump_stats(profile)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = _reporter(args.report_fd)
    paths = MailboxPaths(resolve_root(args.root))
    try:
        prepare_state_dir(paths)
        settings = load_settings(
            paths.state_dir,
            {"idle_timeout_seconds": args.idle_timeout, "log_json": args.log_json, "log_level": args.log_level,
             "http_enabled": args.http, "http_host": args.http_host, "http_port": args.http_port},
        )
    except (StartupError, ConfigError) as exc:
        report(str(exc))
        return EXIT_STARTUP_FAILED
    lock = InstanceLock(paths)
    if not lock.try_acquire():
        if args.command == "rebuild":
            print(f"maild: a daemon serves {paths.root}; stop it first (mailctl daemon stop)", file=sys.stderr)
            return EXIT_STARTUP_FAILED
        print(f"maild: another maild already serves {paths.root}", file=sys.stderr)
        return 0
    if args.command == "rebuild":
        try:
            return run_rebuild(paths, settings, args.from_url)
        finally:
            lock.release()
    try:
        # pydantic looks for plugins in every installed distribution's entry points at its first
        # validator (~25 ms of a cold start); the daemon uses none. An explicit setting still wins.
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
        from maild.logs import configure_logging

        configure_logging(paths.log_file, settings.log_level, settings.log_json, settings.log_max_bytes,
                          settings.log_backups)
        exclude_from_user_repo(paths.root)
        import anyio

        from maild.app import run_daemon

        backend = args.backend or os.environ.get("AGENT_MAIL_BACKEND") or "asyncio"
        _run(anyio.run, run_daemon, paths, settings, args.http_required, backend=backend)
    except MailError as exc:
        logging.getLogger("maild").error("cannot start: %s", exc.message)  # noqa: TRY400 - one line, by design
        report(exc.message)
        return EXIT_STARTUP_FAILED
    except StartupError as exc:
        report(str(exc))
        return EXIT_STARTUP_FAILED
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # the top of the process: one line for people, the traceback for the log
        logging.getLogger("maild").exception("maild failed")
        reason = f"{exc.strerror} ({exc.filename})" if isinstance(exc, OSError) and exc.strerror else repr(exc)
        report(f"maild failed: {reason}; see the log for the traceback")
        return EXIT_STARTUP_FAILED
    finally:
        lock.release()
    return 0


def run_rebuild(paths: MailboxPaths, settings: Settings, from_url: str | None = None) -> int:
    """Rebuild the database from the archive (fetched first from `from_url`, a mirror) with a
    progress bar; one line on failure."""
    from rich.console import Console
    from rich.progress import Progress

    from maild.archive.rebuild import rebuild

    if from_url:
        from maild.archive.mirror import fetch_mirror

        try:
            fetch_mirror(paths.archive, from_url)
        except MailError as exc:
            print(f"maild: {exc.message}", file=sys.stderr)
            return EXIT_STARTUP_FAILED

    if not (paths.archive / "HEAD").exists():
        print(f"maild: no archive at {paths.archive}; nothing to rebuild from", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    # The bar goes to stderr: stdout carries the JSON result, which `mailctl doctor --rebuild` reads.
    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("rebuilding", total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=f"rebuilding {what}", completed=done, total=total)

        try:
            result = rebuild(paths.db, paths.archive, settings, progress, paths.blobs)
        except (MailError, OSError, ValueError, KeyError) as exc:
            print(f"maild: rebuild failed, the current database is untouched: {exc}", file=sys.stderr)
            return EXIT_STARTUP_FAILED
    import json

    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
