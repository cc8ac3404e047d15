"""`mailctl search QUERY` and `mailctl thread ID [--summary]`: operator views over the daemon's tools.

The CLI speaks as the operator (no bound agent), so it searches every agent's mail in the project.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from mailctl.cli import output
from mailctl.cli.common import add_json_flag, add_subcommand, client, print_json, project_key


def _recipients(message: dict[str, Any]) -> str:
    names = list(message.get("to") or []) + [f"cc:{n}" for n in message.get("cc") or []]
    return ", ".join(names) or "-"


def score_text(score: float) -> str:
    """bm25 strength in [0, 1): three significant digits, so that small corpora do not all show 0.00."""
    return f"{score:.3g}"


def search(args: argparse.Namespace) -> int:
    arguments: dict[str, Any] = {
        "project_key": project_key(args),
        "query": args.query,
        "limit": args.limit,
        "include_bodies": False,
        "order": "newest" if args.newest else "relevance",
    }
    for key, value in (("agent_filter", args.agent), ("since_ts", args.since), ("until_ts", args.until),
                       ("thread_id", args.thread), ("importance", args.importance)):
        if value:
            arguments[key] = value
    with client(args) as conn:
        found = (conn.call_tool("search_mailbox", arguments) or {}).get("result", [])
    if args.json:
        print_json(found)
        return 0
    if not output.is_tty():
        # One header line per hit, then the snippets indented; the engine's <mark> tags are dropped
        # (a script wants the text; `**` would collide with the markdown it quotes).
        if not found:
            print("no matches")
        for m in found:
            print(f"#{m['id']}  {output.when(m['created_ts'])}  {m['from']} -> {_recipients(m)}  [{m['importance']}]"
                  f"  thread {m['thread_id'] or '-'}  score {score_text(m['relevance_score'])}")
            for snippet in (m["subject_snippet"] or m["subject"], m.get("body_snippet")):
                if snippet:
                    print("    " + output.strip_marks(snippet).replace("\n", " "))
        return 0
    view = output.View(
        columns=[output.Column("#", justify="right"), output.Column("when (UTC)", no_wrap=True),
                 output.Column("from", style="cyan"), output.Column("to"), output.Column("thread", style="dim"),
                 output.Column("score", justify="right"), output.Column("match")],
        empty=f"no matches for {args.query!r}",
        notes=["score: bm25 relevance in [0, 1), higher is better" + ("; newest first" if args.newest else "")]
        if found else [],
    )
    for m in found:
        snippets = [s.replace("\n", " ") for s in (m["subject_snippet"] or m["subject"], m.get("body_snippet")) if s]
        view.rows.append([str(m["id"]), output.when(m["created_ts"]), m["from"], _recipients(m),
                          m["thread_id"] or "", score_text(m["relevance_score"]), "\n".join(snippets)])
        view.row_styles.append("red" if m["importance"] in ("high", "urgent") else "")
    output.show(view)
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"{summary['total_messages']} message(s); participants: {', '.join(summary['participants']) or '-'}")
    if summary.get("overview"):
        print(f"overview: {summary['overview']}")
    for title, key in (("key points", "key_points"), ("action items", "action_items"),
                       ("code references", "code_references")):
        if summary.get(key):
            print(f"{title}:")
            for item in summary[key]:
                print(f"  - {item}")
    print(f"actions: {summary['open_actions']} open, {summary['done_actions']} done")
    if summary.get("mentions"):
        print("mentions: " + ", ".join(f"@{m['name']} ({m['count']})" for m in summary["mentions"]))
    status = summary.get("llm_status")
    note = f" ({summary['llm_error']})" if summary.get("llm_error") else ""
    print(f"llm: {status}{note}")


def thread(args: argparse.Namespace) -> int:
    project = project_key(args)
    with client(args) as conn:
        if args.summary:
            result = conn.call_tool(
                "summarize_thread",
                {"project_key": project, "thread_id": args.thread_id, "include_examples": True,
                 "llm_mode": not args.no_llm},
            )
        else:
            query = urllib.parse.urlencode({"project": project, "include_bodies": "true"})
            result = conn.read_resource(f"resource://thread/{urllib.parse.quote(args.thread_id)}?{query}")
    if args.json:
        print_json(result)
        return 0
    if args.summary:
        _print_summary(result["summary"])
        return 0
    messages = result.get("messages") or []
    if not messages:
        print(f"no messages in thread {args.thread_id}")
    for index, m in enumerate(messages):
        if index:
            output.say("─" * 40 if output.is_tty() else "")
        output.print_block(f"#{m['id']}  {m['subject']}", _thread_facts(m), m.get("body_md", ""))
    return 0


def _thread_facts(m: dict[str, Any]) -> list[tuple[str, str]]:
    facts = [("from", m["from"]), ("to", _recipients(m)), ("date", output.when(m["created_ts"]) + " UTC")]
    if m.get("importance") not in (None, "normal"):
        facts.append(("importance", m["importance"]))
    return facts


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_subcommand(
        sub, "search",
        'Full-text search of the project\'s mail (all agents): words, "phrases", prefix*, AND/OR/NOT.',
        'mailctl search "deploy AND auth*" --since 2026-01-01',
    )
    p.add_argument("query", help="search text; any input is safe (unsearchable input finds nothing)")
    p.add_argument("--project", help="project key (default: the mailbox root's path)")
    p.add_argument("--limit", type=int, default=20, help="maximum results (default 20)")
    p.add_argument("--agent", help="only mail this agent sent or received")
    p.add_argument("--since", help="only mail created at or after this ISO-8601 time")
    p.add_argument("--until", help="only mail created at or before this ISO-8601 time")
    p.add_argument("--importance", action="append", choices=["low", "normal", "high", "urgent"],
                   help="only this importance (repeatable)")
    p.add_argument("--thread", help="only this thread (key or seed message id)")
    p.add_argument("--newest", action="store_true", help="newest first instead of best match first")
    add_json_flag(p)
    p.set_defaults(handler=search)

    p = add_subcommand(
        sub, "thread",
        "Show a thread's messages oldest first, or its summary with --summary.",
        "mailctl thread AUTH-1 --summary",
    )
    p.add_argument("thread_id", metavar="ID", help="thread key, or the id of the thread's first message")
    p.add_argument("--project", help="project key (default: the mailbox root's path)")
    p.add_argument("--summary", action="store_true", help="summarise instead of listing messages")
    p.add_argument("--no-llm", action="store_true", help="heuristic summary only, even if an LLM is configured")
    add_json_flag(p)
    p.set_defaults(handler=thread)
