"""`mailctl slots` (who holds which build slot) and `mailctl run --slot NAME -- CMD` (upstream's `am-run`).

`run` acquires the slot, runs the command with the terminal's stdin/stdout/stderr, renews the lease
at half its TTL while the command runs, releases it when the command ends (Ctrl-C included), and
exits with the command's exit code. A slot held by someone else is a warning naming holder, branch
and expiry, then exit 75 (EX_TEMPFAIL: try again later) — or, with `--wait`, a wait until it is free.
It does not sandbox or time-limit the command: a lease is a promise between agents, not a lock.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from typing import Any

from mailctl.cli import output
from mailctl.cli.common import add_identity_flags, add_subcommand, client, print_json, project_key
from mailctl.cli.mail import operator_client
from shared.client import DaemonClient
from shared.errors import MailError

EXIT_SLOT_BUSY = 75  # sysexits EX_TEMPFAIL: the slot is held by someone else; retry later (or --wait)
WAIT_POLL_SECONDS = 2.0  # how often --wait asks again


def cmd_slots(args: argparse.Namespace) -> int:
    key = urllib.parse.quote(project_key(args), safe="")
    query = "" if args.all else "?active_only=true"
    with client(args) as conn:
        result = conn.read_resource(f"resource://build_slots/{key}{query}")
    if args.json:
        print_json(result)
        return 0
    view = output.View(
        title=f"build slots of {result['project']}" + ("" if args.all else " (held now; --all for history)"),
        columns=[output.Column("slot", style="cyan", width=20), output.Column("holder", width=18),
                 output.Column("branch", width=18), output.Column("mode", width=9),
                 output.Column("expires (UTC)", width=16), output.Column("state")],
        empty="no build slot is held; `mailctl run --slot NAME -- CMD` takes one",
    )
    for lease in result["slots"]:
        state = "held" if lease["active"] else "expired" if lease["expired"] else "released"
        view.rows.append([lease["slot"], lease["agent"], lease["branch"],
                          "exclusive" if lease["exclusive"] else "shared", output.when(lease["expires_ts"]), state])
        view.row_styles.append("green" if lease["active"] else "dim")
    output.show(view)
    return 0


def current_branch() -> str | None:
    """The checked-out branch here (what upstream took from $BRANCH); None when detached or not in git."""
    try:
        found = subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], capture_output=True, text=True,
                               timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    name = found.stdout.strip()
    return name if found.returncode == 0 and name and name != "HEAD" else None


def describe_holders(conflicts: list[dict[str, Any]]) -> str:
    return "; ".join(f"{c['agent']} on {c['branch']} ({'exclusive' if c['exclusive'] else 'shared'}, "
                     f"until {output.when(c['expires_ts'])} UTC)" for c in conflicts)


def warn(text: str) -> None:
    print(f"mailctl: {text}", file=sys.stderr, flush=True)


class Renewer(threading.Thread):
    """Renews the lease every `every` seconds until stopped; a failed renewal is a warning, retried
    at the next tick on a fresh connection (the daemon may have restarted)."""

    def __init__(self, args: argparse.Namespace, conn: DaemonClient, lease: dict[str, Any], every: float) -> None:
        super().__init__(name="mailctl-run-renewer", daemon=True)
        self.args, self.conn, self.lease, self.every = args, conn, lease, every
        self.stopped = threading.Event()
        self.renewals = 0

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                self.conn.call_tool("renew_build_slot", {**self.lease, "extend_seconds": self.args.ttl})
                self.renewals += 1
            except MailError as exc:
                warn(f"could not renew slot {self.lease['slot']!r}: {exc.code}: {exc.message}")
                if exc.code == "DAEMON_UNAVAILABLE":
                    with contextlib.suppress(MailError):  # else the next tick tries again
                        fresh = operator_client(self.args)
                        self.conn.close()
                        self.conn = fresh


def acquire(args: argparse.Namespace, conn: DaemonClient, lease: dict[str, Any]) -> dict[str, Any] | None:
    """The granted lease, or None (after the warning) when the slot is busy and we may not wait."""
    deadline = None if args.wait is None or args.wait < 0 else time.monotonic() + args.wait
    warned = False
    while True:
        result: dict[str, Any] = conn.call_tool("acquire_build_slot", {
            **lease, "ttl_seconds": args.ttl, "exclusive": not args.shared})
        if result["granted"]:
            return result
        if not warned or args.wait is None:
            warn(f"slot {lease['slot']!r} is held by {describe_holders(result['conflicts'])}"
                 + ("; waiting for it (Ctrl-C to give up)" if args.wait is not None else
                    "; not running the command (--wait waits for the slot)"))
            warned = True
        if args.wait is None or (deadline is not None and time.monotonic() >= deadline):
            return None
        time.sleep(WAIT_POLL_SECONDS if deadline is None else max(0.0, min(WAIT_POLL_SECONDS,
                                                                             deadline - time.monotonic())))


def run_command(command: list[str]) -> int:
    """Run `command` in the foreground; its exit code (128+N when signal N ended it). Ctrl-C reaches
    the command from the terminal, so we only wait for it; SIGTERM and SIGHUP sent to us are passed on."""
    try:
        proc = subprocess.Popen(command)
    except OSError as exc:
        warn(f"cannot run {command[0]!r}: {exc.strerror or exc}")
        return 127 if isinstance(exc, FileNotFoundError) else 126
    previous = {sig: signal.signal(sig, lambda signum, _frame: proc.send_signal(signum))
                for sig in (signal.SIGTERM, signal.SIGHUP)}
    # The command gets the same Ctrl-C from the terminal; its exit ends the wait. A KeyboardInterrupt
    # here could land just after waitpid reaped the command, and the retried wait would then read
    # exit status 0 (ECHILD): a build stopped by Ctrl-C reported as passed. So no exception at all.
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, lambda _signum, _frame: None)
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def cmd_run(args: argparse.Namespace) -> int:
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        raise ValueError("give the command after `--`, e.g. mailctl run --slot build -- make test")
    if args.renew_every is not None and args.renew_every <= 0:
        raise ValueError(f"--renew-every must be a positive number of seconds (got {args.renew_every:g})")
    lease = {"project_key": project_key(args), "slot": args.slot,
             **({"branch": branch} if (branch := args.branch or current_branch()) else {})}
    conn = operator_client(args)
    renewer: Renewer | None = None
    try:
        granted = acquire(args, conn, lease)
        if granted is None:
            return EXIT_SLOT_BUSY
        lease["branch"] = granted["branch"]
        every = args.renew_every or args.ttl / 2
        if sys.stderr.isatty():
            warn(f"holding slot {args.slot!r} ({'shared' if args.shared else 'exclusive'}, branch "
                 f"{granted['branch']}), renewing every {every:g} s")
        renewer = Renewer(args, conn, lease, every)
        renewer.start()
        return run_command(command)
    finally:
        if renewer is not None:
            renewer.stopped.set()
            renewer.join()
            conn = renewer.conn
            try:
                conn.call_tool("release_build_slot", lease)
            except (MailError, KeyboardInterrupt) as exc:  # the lease then ends at its expiry: say so
                reason = exc.code if isinstance(exc, MailError) else "interrupted"
                warn(f"could not release slot {args.slot!r} ({reason}); it expires on its own")
        conn.close()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_subcommand(sub, "slots", "List build slot leases (who builds what, until when).", "mailctl slots --json")
    p.add_argument("--all", action="store_true", help="include released and expired leases")
    p.add_argument("--project", help="project key (default: the mailbox root path)")
    p.add_argument("--json", action="store_true", help="print the raw JSON result")
    p.set_defaults(handler=cmd_slots)

    r = add_subcommand(
        sub, "run",
        "Run a command holding a build slot: acquire, renew at half the TTL, release on exit (Ctrl-C too). "
        "Exits with the command's code; 75 if the slot is busy (unless --wait).",
        "mailctl run --slot frontend-build -- npm run build")
    r.add_argument("--slot", required=True, help="the slot's name, e.g. frontend-build")
    r.add_argument("--ttl", type=int, default=3600, help="lease length in seconds (60..604800; default 3600)")
    r.add_argument("--shared", action="store_true", help="share the slot with other shared holders")
    r.add_argument("--branch", help="your branch (default: the checked-out one, else main)")
    r.add_argument("--wait", type=float, nargs="?", const=-1.0, metavar="SECONDS",
                   help="if the slot is busy, wait for it (at most SECONDS; forever without a value)")
    r.add_argument("--renew-every", type=float, metavar="SECONDS", help="renew this often (default: TTL / 2)")
    add_identity_flags(r, json_flag=False)
    r.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    r.set_defaults(handler=cmd_run)
