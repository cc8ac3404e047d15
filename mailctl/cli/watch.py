"""`mailctl watch`: new mail printed the moment it arrives (a `tail -f` for an inbox).

Built on the daemon's `wait_for_mail` long poll, so it costs nothing while the inbox is quiet and
misses nothing between waits (each wait starts from the last message id seen). Prints one line per
message (or one JSON object per line with --json, for scripts); Ctrl-C ends it. It does not mark
anything read.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mailctl.cli import output
from mailctl.cli.common import add_identity_flags, add_subcommand, project_key
from mailctl.cli.mail import operator_client

WAIT_SECONDS = 60  # under the remote client's 120 s request timeout; the loop simply asks again


def line_for(message: dict[str, Any]) -> str:
    mark = "!" if message.get("importance") in ("high", "urgent") else " "
    ack = " [ack requested]" if message.get("ack_required") else ""
    return f"{mark} {output.when(message.get('created_ts'))}  #{message['id']}  {message.get('from')}: " \
           f"{message.get('subject')}{ack}"


def cmd_watch(args: argparse.Namespace) -> int:
    shown = 0
    with operator_client(args) as conn:
        since: int | None = args.since_id
        while args.count is None or shown < args.count:
            found = conn.call_tool("wait_for_mail", {
                "project_key": project_key(args), "timeout_seconds": WAIT_SECONDS, "include_bodies": args.bodies,
                **({"since_id": since} if since is not None else {}),
            })
            since = found["last_id"]
            for message in reversed(found["result"]):  # oldest first, as a log reads
                if args.json:
                    sys.stdout.write(json.dumps(message, ensure_ascii=False) + "\n")
                else:
                    output.say(line_for(message), "bold" if message.get("importance") in ("high", "urgent") else "")
                sys.stdout.flush()
                shown += 1
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_subcommand(sub, "watch", "Print new mail as it arrives (Ctrl-C to stop); never marks it read.",
                       "mailctl watch --agent BlueLake --token T --json")
    add_identity_flags(p)
    p.add_argument("--since-id", type=int, help="also show mail with a larger id that is already there")
    p.add_argument("--count", type=int, help="exit after this many messages (for scripts)")
    p.add_argument("--bodies", action="store_true", help="include message bodies (with --json)")
    p.set_defaults(handler=cmd_watch)
