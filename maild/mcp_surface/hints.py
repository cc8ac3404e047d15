"""Error hints in the caller's words: a person at `mailctl` is told CLI commands, an agent tools.

Services word their hints for agents (tool names, `resource://` URIs): that is who calls them most.
When the session's hello says the caller is the CLI (`client: mailctl`), the surface rewrites those
references into the `mailctl` commands that do the same, at the one place errors leave the daemon.
Only the message changes; the code and the structured `data` stay as they are, for scripts.
"""

from __future__ import annotations

import re
from typing import Any

from maild.services.sessions import current_session

CLI_CLIENT = "mailctl"

# Longest, most specific phrases first: each rule runs on the output of the ones before it.
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"resource://agents/(?:<project>|\{project\}|[\w.-]+)"), "`mailctl agents`"),
    (re.compile(r"pass it as sender_token / registration_token"), "pass it with --token"),
    (re.compile(r"pass registration_token / sender_token with the call"), "pass --token"),
    (re.compile(r"\bcall ensure_project or register_agent\b"),
     "run `mailctl call ensure_project human_key=PATH` or `mailctl register`"),
    (re.compile(r"\bcall tools/list \(or list_extended_tools\)"), "run `mailctl tools`"),
    (re.compile(r"\b(?:call|use|Use) list_extended_tools\b"), "run `mailctl tools`"),
    (re.compile(r"\bcall register_agent\b"), "run `mailctl register`"),
    (re.compile(r"\bin fetch_inbox\b"), "with `mailctl inbox`"),
]
_TOOLS = {
    "register_agent": "mailctl register",
    "fetch_inbox": "mailctl inbox",
    "send_message": "mailctl send",
    "reply_message": "mailctl reply",
    "acknowledge_message": "mailctl ack",
    "mark_message_read": "mailctl read",
    "search_mailbox": "mailctl search",
    "create_agent_identity": "mailctl identity new",
}
_TOOL_WORD = re.compile(r"(?<![`\w])(" + "|".join(_TOOLS) + r")(?![`\w])")


def for_cli(message: str) -> str:
    """`message` with tool and resource references replaced by the mailctl commands that do the same."""
    for pattern, replacement in _RULES:
        message = pattern.sub(replacement, message)
    return _TOOL_WORD.sub(lambda found: f"`{_TOOLS[found.group(1)]}`", message)


def for_caller(payload: dict[str, Any]) -> dict[str, Any]:
    """An error payload worded for the current session's client (unchanged unless it is the CLI)."""
    session = current_session.get()
    if session is None or session.client != CLI_CLIENT or not isinstance(payload.get("message"), str):
        return payload
    return {**payload, "message": for_cli(payload["message"])}
