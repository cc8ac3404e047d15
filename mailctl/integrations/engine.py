"""What `mailctl integrate` does: give each client an agent, write its config, remember what it wrote.

The record `<root>/.mcp_mail/integrations.json` (mode 0600: it holds the agents' tokens) says, per
client, which agent it got and which keys and hooks were added to which files. A second run reuses
that agent and so changes nothing; `--remove` undoes exactly the recorded edits; the hooks find
their agent's token there; `doctor` and `integrate status` read it. File editing lives in
`configfile.py`, the clients' shapes in `clients.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailctl.integrations import configfile
from mailctl.integrations.clients import CLIENTS, Client, Entry, hook_command
from mailctl.integrations.record import RECORD_NAME, record_path
from shared.errors import InvalidArgument
from shared.paths import MailboxPaths

DRY_AGENT = "<agent named when run>"
DRY_TOKEN = "<token issued when run>"  # noqa: S105 - a placeholder shown by --dry-run, not a secret


@dataclass
class Outcome:
    client: str
    title: str
    scope: str
    status: str  # written | unchanged | removed | not-integrated | would-write | would-remove
    agent: str | None = None
    files: list[str] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)
    diff: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"client": self.client, "title": self.title, "scope": self.scope, "status": self.status,
                "agent": self.agent, "files": self.files, "backups": self.backups, "notes": self.notes,
                **({"diff": self.diff} if self.diff else {})}


def load_record(paths: MailboxPaths) -> dict[str, Any]:
    try:
        data = json.loads(record_path(paths).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"clients": {}}
    except (OSError, ValueError) as exc:
        raise InvalidArgument(
            f"cannot read {record_path(paths)} ({exc}); move it away and run integrate again") from None
    return data if isinstance(data, dict) and isinstance(data.get("clients"), dict) else {"clients": {}}


def save_record(paths: MailboxPaths, record: dict[str, Any]) -> None:
    paths.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = record_path(paths)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2)
    tmp.replace(target)


def mailctl_executable() -> list[str]:
    """The absolute `mailctl` to write into configs: editors rarely inherit a venv's PATH."""
    beside = Path(sys.executable).parent / "mailctl"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("mailctl")
    if found:
        return [str(Path(found).absolute())]
    return [sys.executable, "-P", "-m", "mailctl"]


def guard_project(root: Path) -> str | None:
    """The project key the git guard checks for this root (None when the root is not a git repo)."""
    if not (root / ".git").exists():
        return None
    from shared.guard_install import project_key_for

    return project_key_for(root)


def _entry(exe: list[str], root: Path, scope: str, agent: str, token: str, project: str | None) -> Entry:
    # Project scope names the root: editors do not always start servers in the project directory.
    # User scope leaves it out, so the mailbox follows the directory the client runs in.
    where = root if scope == "project" else None
    args = [*exe[1:], "mcp", *(["--root", str(where)] if where else []), "--agent", agent]
    return Entry(command=exe[0], args=args, env={"AGENT_MAIL_TOKEN": token}, agent=agent,
                 hook=lambda event: hook_command(exe, event, where, agent, project))


def _register(paths: MailboxPaths, client: Client, name: str | None) -> tuple[str, str]:
    from shared.client import DaemonClient

    with DaemonClient(paths) as conn:
        result = conn.call_tool("register_agent", {
            "project_key": str(paths.root), "program": client.id, "model": "unknown",
            "task_description": f"{client.title} (set up by mailctl integrate)",
            **({"name": name} if name else {}),
        })
    token = result.get("registration_token")
    if not token:
        raise InvalidArgument(
            f"{result['name']} already exists and its token is not in {RECORD_NAME}; choose another --agent-name "
            "or leave it out for a new agent", data={"agent_name": result["name"]},
        )
    return str(result["name"]), str(token)


def integrate(paths: MailboxPaths, clients: list[Client], *, scope: str, agent_name: str | None,
              dry_run: bool, home: Path) -> list[Outcome]:
    if agent_name and len(clients) != 1:
        raise InvalidArgument("--agent-name names one agent: give exactly one CLIENT with it")
    record = load_record(paths)
    exe = mailctl_executable()
    project = guard_project(paths.root)
    outcomes = []
    for client in clients:
        where = client.scope(scope)
        previous = record["clients"].get(client.id)
        if previous and previous.get("scope") != where and not dry_run:
            outcomes.append(_remove_one(paths, record, client, dry_run=False, home=home))
            previous = None
        if previous and (agent_name is None or agent_name.lower() == str(previous["agent"]).lower()):
            agent, token = str(previous["agent"]), str(previous["token"])
        elif dry_run:
            agent, token = agent_name or DRY_AGENT, DRY_TOKEN
        else:
            agent, token = _register(paths, client, agent_name)
        entry = _entry(exe, paths.root, where, agent, token, project)
        config = client.config_path(home, paths.root, where)
        target = client.build(entry, config, where == "user")
        changes = [configfile.plan(path, fmt, edits, secret=secret) for path, fmt, edits, secret in target.files]
        outcome = Outcome(client.id, client.title, where, "unchanged", agent, [str(c.path) for c in changes])
        outcome.notes = [note for c in changes if c.secret for note in [committed_secret_note(paths.root, c.path)]
                         if note]
        if any(c.changed for c in changes):
            outcome.status = "would-write" if dry_run else "written"
            outcome.diff = "".join(c.diff() for c in changes)
        if not dry_run:
            old_files = {f["path"]: f for f in (previous or {}).get("files", [])}
            files = []
            for change in changes:
                backup = configfile.write(change)
                if backup:
                    outcome.backups.append(str(backup))
                old = old_files.get(str(change.path), {})
                created = [list(k) for k in change.created] + [k for k in old.get("created", [])
                                                                if k not in [list(c) for c in change.created]]
                files.append({"path": str(change.path), "fmt": change.fmt, "created": created,
                              "created_file": old.get("created_file", change.before is None)})
            record["clients"][client.id] = {"title": client.title, "agent": agent, "token": token, "scope": where,
                                            "root": str(paths.root), "executable": exe, "project": project,
                                            "files": files}
            save_record(paths, record)
        outcomes.append(outcome)
    return outcomes


def committed_secret_note(root: Path, path: Path) -> str | None:
    """A warning when a file that now holds a token is tracked by git (a commit would publish it)."""
    if not (root / ".git").exists() or not path.is_relative_to(root):
        return None
    import subprocess

    tracked = subprocess.run(["git", "-C", str(root), "ls-files", "--error-unmatch", str(path)],
                             capture_output=True, check=False).returncode == 0
    if not tracked:
        return None
    return (f"{path} is tracked by git and now holds an agent token: do not commit that change (or use "
            "--scope user, which keeps tokens out of the repository)")


def _remove_one(paths: MailboxPaths, record: dict[str, Any], client: Client, *, dry_run: bool,
                home: Path) -> Outcome:
    previous = record["clients"].get(client.id)
    if not previous:
        return Outcome(client.id, client.title, "-", "not-integrated")
    entry = _entry(list(previous["executable"]), Path(previous["root"]), previous["scope"], previous["agent"],
                   previous["token"], previous.get("project"))
    config = client.config_path(home, Path(previous["root"]), previous["scope"])
    target = client.build(entry, config, previous["scope"] == "user")
    recorded = {f["path"]: f for f in previous.get("files", [])}
    outcome = Outcome(client.id, client.title, previous["scope"], "unchanged", previous["agent"])
    for path, fmt, edits, _secret in target.files:
        info = recorded.get(str(path), {})
        change = configfile.plan(path, fmt, edits, remove=True,
                                 created=[tuple(k) for k in info.get("created", [])],
                                 created_file=bool(info.get("created_file")))
        outcome.files.append(str(path))
        if change.changed:
            outcome.status = "would-remove" if dry_run else "removed"
            outcome.diff += change.diff()
            if not dry_run:
                backup = configfile.write(change)
                if backup:
                    outcome.backups.append(str(backup))
    if not dry_run:
        if outcome.status == "unchanged":
            outcome.status = "removed"  # nothing left in the files; forget the record all the same
        del record["clients"][client.id]
        save_record(paths, record)
    return outcome


def remove(paths: MailboxPaths, clients: list[Client], *, dry_run: bool, home: Path) -> list[Outcome]:
    record = load_record(paths)
    return [_remove_one(paths, record, client, dry_run=dry_run, home=home) for client in clients]


def integrated_clients(paths: MailboxPaths) -> list[Client]:
    return [CLIENTS[c] for c in load_record(paths)["clients"] if c in CLIENTS]


def status(paths: MailboxPaths, home: Path) -> list[dict[str, Any]]:
    """Per known client: installed?, integrated (agent, scope, files)?, and what is wrong, if anything."""
    record = load_record(paths)["clients"]
    rows = []
    for client in CLIENTS.values():
        info = record.get(client.id)
        row: dict[str, Any] = {"client": client.id, "title": client.title, "detected": client.detected(home),
                               "integrated": bool(info), "hooks": client.hooks, "problems": []}
        if info:
            row.update(agent=info["agent"], scope=info["scope"], files=[f["path"] for f in info["files"]])
            row["problems"] = config_problems(client, info, home)
        rows.append(row)
    return rows


def config_problems(client: Client, info: dict[str, Any], home: Path) -> list[str]:
    """Why an integrated client's config would not start our server (doctor and status share it)."""
    problems = []
    config = client.config_path(home, Path(info["root"]), info["scope"])
    try:
        _text, data = configfile.load(config, client.fmt)
    except InvalidArgument as exc:
        return [exc.message]
    server = _find_server(data)
    if server is None:
        return [f"{config} has no agent-mail server entry any more; run `mailctl integrate {client.id}`"]
    command = server.get("command")
    exe = command[0] if isinstance(command, list) and command else command
    if not isinstance(exe, str) or not (Path(exe).is_file() and os.access(exe, os.X_OK)):
        problems.append(f"{config} runs {exe!r}, which is not an executable file; run `mailctl integrate "
                        f"{client.id}` again from the environment where mailctl is installed")
    return problems


def _find_server(data: dict[str, Any]) -> dict[str, Any] | None:
    for key in ("mcpServers", "mcp_servers", "servers", "mcp"):
        table = data.get(key)
        if isinstance(table, dict) and isinstance(table.get("agent-mail"), dict):
            server: dict[str, Any] = table["agent-mail"]
            return server
    return None

