"""Where `integrate` keeps what it did, and the one lookup the hooks need from it (stdlib only).

`<root>/.mcp_mail/integrations.json` (mode 0600) holds, per client, its agent, that agent's token,
the scope and the edits made. `engine.py` writes it; hooks read an agent's token from it (by a
string path: a hook process does without pathlib, see mailctl/hooks.py).
"""

from __future__ import annotations

import json
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from shared.paths import MailboxPaths

RECORD_NAME = "integrations.json"


def record_path(paths: MailboxPaths) -> Path:
    return paths.state_dir / RECORD_NAME


def agent_token(paths: MailboxPaths, agent: str) -> str | None:
    """The token integrate stored for `agent` (what the hooks present), or None."""
    return token_in(record_path(paths), agent)


def token_in(record: str | os.PathLike[str], agent: str) -> str | None:
    """`agent`'s token in the record file at `record`, or None."""
    try:
        with open(record, encoding="utf-8") as handle:  # noqa: PTH123 - a str path from hooks
            clients = json.load(handle).get("clients", {})
    except (OSError, ValueError, AttributeError):
        return None
    for info in clients.values() if isinstance(clients, dict) else ():
        if isinstance(info, dict) and str(info.get("agent", "")).lower() == agent.lower():
            token = info.get("token")
            return token if isinstance(token, str) else None
    return None
