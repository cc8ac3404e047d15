"""`mailctl mcp`: what an editor's MCP config runs (see docs/shim.md for per-editor snippets)."""

from __future__ import annotations

import argparse
import os

from mailctl.cli.common import add_subcommand, mailbox


def run(args: argparse.Namespace) -> int:
    remote = os.environ.get("AGENT_MAIL_REMOTE")
    if remote:
        from mailctl.remote import run as run_remote

        # The bridge's token comes only from the environment too (AGENT_MAIL_HTTP_TOKEN).
        return run_remote(remote, os.environ.get("AGENT_MAIL_HTTP_TOKEN") or None,
                          os.environ.get("AGENT_MAIL_CACERT") or None)
    from mailctl.shim import run as run_shim

    agent = args.agent or os.environ.get("AGENT_MAIL_NAME") or None
    tools = args.tools or os.environ.get("MCP_TOOLS_MODE") or None
    # The token comes only from the environment: a command-line flag would show it in `ps`.
    token = os.environ.get("AGENT_MAIL_TOKEN") or None
    return run_shim(mailbox(args), agent, tools, token)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_subcommand(
        sub,
        "mcp",
        "Serve MCP over stdio for one agent, relaying to this mailbox's maild (started on demand).",
        "mailctl mcp --agent BlueLake --tools core   # in an editor's MCP server config\n"
        "  AGENT_MAIL_HTTP_TOKEN=... mailctl mcp --remote https://mail.example.com/mcp/   # a remote maild",
    )
    parser.add_argument("--agent", help="bind this session to the agent (default $AGENT_MAIL_NAME; its token, "
                        "when needed, in $AGENT_MAIL_TOKEN)")
    parser.add_argument("--tools", choices=["core", "extended"], help="tool set (default $MCP_TOOLS_MODE or core)")
    parser.set_defaults(handler=run)
