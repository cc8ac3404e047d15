"""File reservations for people: `mailctl reservations` lists the project's leases; `reserve`, `release`
and `renew` take, give back and extend your own (docs/reservations.md).

They call the same tools agents use (file_reservation_paths, release_file_reservations,
renew_file_reservations) as HumanOperator, or as `--as NAME --token=T`. The daemon decides grants
and conflicts; this module only shapes arguments and output. Force-release is not here (it is an
agent's act on a stale holder: `mailctl call force_release_file_reservation`).
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from typing import Any

from mailctl.cli import output
from mailctl.cli.common import add_identity_flags, add_json_flag, add_subcommand, client, print_json, project_key
from mailctl.cli.mail import operator_client


def _state(item: dict[str, Any]) -> str:
    if item.get("released_ts"):
        return f"released {output.when(item['released_ts'])}"
    if item.get("expired"):
        return f"expired {output.when(item['expires_ts'])}"
    return f"until {output.when(item['expires_ts'])}" + (" (stale)" if item.get("stale") else "")


def cmd_list(args: argparse.Namespace) -> int:
    key = urllib.parse.quote(project_key(args), safe="")
    query = "" if args.all else "?active_only=true"
    with client(args) as conn:
        items = conn.read_resource(f"resource://file_reservations/{key}{query}")
    if args.json:
        print_json(items)
        return 0
    view = output.View(
        title=f"{len(items)} {'' if args.all else 'active '}reservation(s)",
        columns=[output.Column("#", justify="right", width=6), output.Column("holder", style="cyan", width=16),
                 output.Column("pattern", style="bold", width=32), output.Column("mode", width=9),
                 output.Column("state", width=26), output.Column("reason")],
        empty="no active reservations" + ("" if args.all else " (--all shows released and expired ones)"),
    )
    for item in items:
        view.rows.append([f"#{item['id']}", item["agent"], item["path_pattern"],
                          "exclusive" if item["exclusive"] else "shared", _state(item), item.get("reason") or ""])
        live = not item.get("released_ts") and not item.get("expired")
        view.row_styles.append("" if live else "dim")
    output.show(view)
    return 0


def cmd_reserve(args: argparse.Namespace) -> int:
    with operator_client(args) as conn:
        result = conn.call_tool("file_reservation_paths", {
            "project_key": project_key(args), "paths": args.paths, "ttl_seconds": args.ttl,
            "exclusive": not args.shared, "reason": args.reason, "fail_on_conflict": args.fail_on_conflict,
        })
    if args.json:
        print_json(result)
    else:
        for item in result["granted"]:
            mode = "exclusive" if item["exclusive"] else "shared"
            until = output.when(item["expires_ts"])
            output.say(f"reserved #{item['id']} {item['path_pattern']} ({mode}) until {until}", "green")
        for conflict in result["conflicts"]:
            for holder in conflict["holders"]:
                kind = "exclusively" if holder["exclusive"] else "shared"
                print(f"mailctl: conflict: {conflict['path']} overlaps {holder['path_pattern']} held {kind} by "
                      f"{holder['agent']} until {output.when(holder['expires_ts'])}", file=sys.stderr)
        for warning in result.get("warnings", []):
            print(f"mailctl: warning: {warning}", file=sys.stderr)
    if result.get("refused"):
        print("mailctl: nothing reserved (--fail-on-conflict): wait for the holders or pick other paths",
              file=sys.stderr)
        return 1
    return 0


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    chosen: dict[str, Any] = {}
    if args.paths:
        chosen["paths"] = args.paths
    if args.id:
        chosen["file_reservation_ids"] = args.id
    return chosen


def cmd_release(args: argparse.Namespace) -> int:
    chosen = _selection(args)
    if not chosen and not args.all:
        raise ValueError("name the patterns to release, or --id N (see `mailctl reservations`), or --all for "
                         "every reservation you hold")
    with operator_client(args) as conn:
        result = conn.call_tool("release_file_reservations", {"project_key": project_key(args), **chosen})
    if args.json:
        print_json(result)
    else:
        output.say(f"released {result['released']} reservation(s)", "green" if result["released"] else "yellow")
    return 0


def cmd_renew(args: argparse.Namespace) -> int:
    with operator_client(args) as conn:
        result = conn.call_tool("renew_file_reservations", {
            "project_key": project_key(args), "extend_seconds": args.ttl, **_selection(args)})
    if args.json:
        print_json(result)
        return 0
    if not result["file_reservations"]:
        output.say("nothing renewed: you hold no matching live reservation (`mailctl reservations`)", "yellow")
    for item in result["file_reservations"]:
        output.say(f"renewed #{item['id']} {item['path_pattern']} until {output.when(item['new_expires_ts'])}",
                   "green")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_subcommand(sub, "reservations", "List the project's file reservations (active ones; --all for every one).",
                       "mailctl reservations --all --json")
    p.add_argument("--all", action="store_true", help="include released and expired reservations")
    p.add_argument("--project", help="project key (default: the mailbox root path)")
    add_json_flag(p)
    p.set_defaults(handler=cmd_list)

    p = add_subcommand(sub, "reserve", "Reserve path globs before editing them (an advisory lease; conflicts are "
                       "reported on stderr).", "mailctl reserve 'src/auth/**' docs/auth.md --ttl 1800 --reason 'auth'")
    p.add_argument("paths", nargs="+", metavar="PATH", help="globs relative to the repository root")
    p.add_argument("--ttl", type=int, default=3600, metavar="SECONDS", help="lease length (default 3600, >= 60)")
    p.add_argument("--shared", action="store_true", help="a shared (non-exclusive) lease: blocks nobody")
    p.add_argument("--reason", default="", help="why, shown to whoever runs into the lease")
    p.add_argument("--fail-on-conflict", action="store_true",
                   help="grant nothing (exit 1) if another agent holds an exclusive overlapping lease")
    add_identity_flags(p)
    p.set_defaults(handler=cmd_reserve)

    p = add_subcommand(sub, "release", "Release your reservations by pattern or id.",
                       "mailctl release 'src/auth/**' --id 12")
    p.add_argument("paths", nargs="*", metavar="PATH", help="patterns exactly as reserved")
    p.add_argument("--id", type=int, action="append", metavar="N", help="a reservation id (repeatable)")
    p.add_argument("--all", action="store_true", help="every reservation you hold in the project")
    add_identity_flags(p)
    p.set_defaults(handler=cmd_release)

    p = add_subcommand(sub, "renew", "Extend your reservations (all of them, or those named); keeps their mode and "
                       "reason.", "mailctl renew --ttl 1800 'src/auth/**'")
    p.add_argument("paths", nargs="*", metavar="PATH", help="patterns exactly as reserved (default: all yours)")
    p.add_argument("--id", type=int, action="append", metavar="N", help="a reservation id (repeatable)")
    p.add_argument("--ttl", type=int, default=1800, metavar="SECONDS", help="extend by this long (default 1800)")
    add_identity_flags(p)
    p.set_defaults(handler=cmd_renew)
