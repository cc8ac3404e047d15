"""`mailctl stats`: how the daemon's tools are doing — per tool calls, errors, p50 and p95 latency, totals.

Reads `resource://tooling/metrics` (figures kept across daemon restarts). A table for a person,
the resource's JSON with --json. It does not reset anything and records nothing itself.
"""

from __future__ import annotations

import argparse
from typing import Any

from mailctl.cli import output
from mailctl.cli.common import add_json_flag, add_subcommand, client, print_json


def _ms(value: Any) -> str:
    return f"{float(value):.2f}" if isinstance(value, int | float) else "-"


def cmd_stats(args: argparse.Namespace) -> int:
    with client(args) as conn:
        result = conn.read_resource("resource://tooling/metrics")
    if args.json:
        print_json(result)
        return 0
    totals = result["totals"]
    view = output.View(
        title=f"tool calls since {output.when(totals.get('since'))} UTC",
        columns=[output.Column("tool", style="cyan", width=28, no_wrap=True), output.Column("cluster", width=18),
                 output.Column("calls", justify="right", width=8), output.Column("errors", justify="right", width=8),
                 output.Column("p50 ms", justify="right", width=9), output.Column("p95 ms", justify="right", width=9),
                 output.Column("max ms", justify="right")],
        empty="no tool calls recorded yet",
    )
    for row in result["tools"]:
        view.rows.append([row["name"], row.get("cluster", "-"), str(row["calls"]), str(row["errors"]),
                          _ms(row["p50_ms"]), _ms(row["p95_ms"]), _ms(row["max_ms"])])
        view.row_styles.append("red" if row["errors"] else "")
    if view.rows:
        view.rows.append(["total", "", str(totals["calls"]), str(totals["errors"]), _ms(totals["p50_ms"]),
                          _ms(totals["p95_ms"]), ""])
        view.row_styles.append("bold")
    if not totals.get("recording", True):
        view.notes.append("recording is off (AGENT_MAIL_TOOL_METRICS=false): these are kept figures only")
    output.show(view)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_subcommand(sub, "stats", "Per-tool calls, errors and p50/p95 latency of this mailbox's daemon.",
                       "mailctl stats --json")
    add_json_flag(p)
    p.set_defaults(handler=cmd_stats)
