"""The AGENTS.md / CLAUDE.md section that tells an agent how to use mail and reservations (~200
tokens), and its idempotent insertion between markers. Owns the text; not the clients' configs."""

from __future__ import annotations

from pathlib import Path

BEGIN = "<!-- agent-mail:begin (managed by `mailctl integrate --write-blurb`) -->"
END = "<!-- agent-mail:end -->"

BLURB = """## Agent Mail: coordinate with the other agents in this repository

You have an `agent-mail` MCP server; your agent name is already set (call `register_agent` once if a
tool says you are not bound).
- Start of a session: `fetch_inbox`; read and answer mail, `acknowledge_message` when asked to.
- Before editing files, reserve them: `file_reservation_paths` with globs such as `src/auth/**`
  (exclusive, with a TTL; in core tool mode through `call_extended_tool`). A conflict names the
  holder: message them instead of editing. Release with `release_file_reservations` when done.
  Commits and edits on another agent's exclusive reservation are refused.
- Talk with `send_message` (to, subject, markdown body; `thread_id` to stay in a thread) and
  `reply_message`. Use importance `high` only for what blocks someone.
- `search_messages` and `summarize_thread` find past decisions before you ask again.
- When told "N unread — call fetch_inbox", do it before continuing.
"""


def section() -> str:
    return f"{BEGIN}\n{BLURB}{END}\n"


def insert(path: Path) -> bool:
    """Put the section into `path` (replacing an earlier one between the markers); False if unchanged."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    start, end = text.find(BEGIN), text.find(END)
    if start != -1 and end > start:
        new = text[:start] + section() + text[end + len(END):].lstrip("\n")
    else:
        new = text + ("\n" if text and not text.endswith("\n") else "") + ("\n" if text else "") + section()
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True
