"""`mailctl call TOOL [k=v ...] [--json ARGS]`: call any tool and print its structured result."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mailctl.cli.common import add_subcommand, client, print_json
from shared.errors import InvalidArgument


def parse_pairs(pairs: list[str], json_args: str | None) -> dict[str, Any]:
    """`k=v` pairs; a value that parses as JSON (numbers, true, lists) is taken as JSON."""
    arguments: dict[str, Any] = {}
    if json_args:
        try:
            loaded = json.loads(json_args)
        except ValueError as exc:
            raise InvalidArgument(f"--json must be a JSON object: {exc}") from None
        if not isinstance(loaded, dict):
            raise InvalidArgument("--json must be a JSON object such as '{\"human_key\": \"/repo\"}'")
        arguments.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"expected key=value, got {pair!r}")
        try:
            arguments[key] = json.loads(raw)
        except ValueError:
            arguments[key] = raw
    return arguments


def run(args: argparse.Namespace) -> int:
    arguments = parse_pairs(args.pairs, args.json_args)
    with client(args) as conn:
        print_json(conn.call_tool(args.tool, arguments))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_subcommand(
        sub,
        "call",
        "Call a tool by name and print its result as JSON (exit 1 with the error code on failure).",
        "mailctl call ensure_project human_key=/home/me/app",
    )
    parser.add_argument("tool", help="tool name, e.g. health_check")
    parser.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help="arguments; values parse as JSON if they can")
    parser.add_argument("--json", dest="json_args", metavar="ARGS", help="arguments as one JSON object")
    parser.set_defaults(handler=run)
