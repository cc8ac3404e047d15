"""`mailctl mcp`: what an editor's MCP config runs (see docs/shim.md for per-editor snippets)."""

from __future__ import annotations

import argparse

from mailctl.cli.common import add_subcommand


def run(args: argparse.Namespace) -> int:
    from mailctl.shim import main as run_shim

    return run_shim(getattr(args, "root", None), args.agent, args.tools)


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
