"""Agents: registration, naming modes, identity checks (who may act as whom) and presence.

Identity rule (beyond upstream): a session acts as the agent it is bound to (by register_agent,
or by a hello naming an agent under `hello_refusal`'s rule). Acting as any *other* agent needs that
agent's registration token, returned once at creation and stored only as a SHA-256 hash. Names are
unique among active agents of the mailbox root, case-insensitively; the database's unique index is
the arbiter, and all name claims run inside the single writer's IMMEDIATE transactions. The trust
model (who is the operator, what a hello may claim) is written down in docs/messaging.md.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from maild.archive import formats
from maild.services import names
from maild.services.projects import ensure_in, find_in, validate_project_key
from maild.services.sessions import Session, Sessions
from maild.store import Connection, IntegrityError, Store, utcnow
from maild.store.outbox import enqueue
from shared.config import Settings
from shared.errors import AlreadyBound, AuthenticationRequired, InvalidArgument, NameTaken, NotFound

OPERATOR_CLIENT = "mailctl"
# The identity the CLI speaks as for the person at the keyboard; reserved for operator sessions.
OPERATOR_NAME = "HumanOperator"
# The daemon's own identity for system mail (ack reminders, services/acks.py): nobody may register it.
SYSTEM_NAME = "AckWatch"
ATTACHMENT_POLICIES = ("auto", "inline", "file")
MAX_FIELD_CHARS = {"program": 128, "model": 128, "task_description": 2048}

# The project's slug by a correlated lookup, not a JOIN: with one or a few projects SQLite's
# statistics make it scan the projects index for the join, ~4x the cost of the whole row lookup
# (17 vs 5 µs; two of these run in every send's transaction). Every agent has its project (a
# NOT NULL foreign key), so the rows are the same as the join's.
AGENT_COLUMNS = (
    "a.id, a.name, a.program, a.model, a.task_description, a.inception_ts, a.last_active_ts, a.project_id,"
    " a.attachments_policy, a.contact_policy, a.is_active, a.deleted_ts, a.unread_count,"
    " (SELECT p.slug FROM projects p WHERE p.id = a.project_id), a.placeholder, a.named_by_env"
)
AGENT_FROM = "agents a"


def agent_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row[0],
        "name": row[1],
        "program": row[2],
        "model": row[3],
        "task_description": row[4],
        "inception_ts": row[5],
        "last_active_ts": row[6],
        "project_id": row[7],
        "attachments_policy": row[8],
        "contact_policy": row[9],
        "is_active": bool(row[10]),
        "deleted_ts": row[11],
        "project_slug": row[13],
        "placeholder": bool(row[14]),
    }


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(conn: Connection, agent_id: int, token: str | None) -> bool:
    if not token:
        return False
    stored = conn.execute("SELECT token_hash FROM agents WHERE id = ?", (agent_id,)).get
    if not stored:
        return False
    if str(stored).startswith(formats.TOKEN_SALT_PREFIX):  # restored from the archive by a rebuild
        salt = str(stored)[len(formats.TOKEN_SALT_PREFIX):].split("$", 1)[0]
        return hmac.compare_digest(str(stored), formats.salted_token_hash(hash_token(token), salt))
    return hmac.compare_digest(str(stored), hash_token(token))


def validate_name(name: object, what: str = "name") -> str:
    if not isinstance(name, str):
        raise InvalidArgument(f"{what} must be a string such as 'BlueLake'")
    if len(name) > names.MAX_NAME_CHARS:
        raise InvalidArgument(f"{what} is {len(name)} characters; agent names have at most {names.MAX_NAME_CHARS}")
    return name


def find_active(conn: Connection, name: str) -> Any:
    """The active agent answering to `name` (case- and punctuation-insensitive), or None."""
    key = names.lookup_key(name)
    if not key:
        return None
    return conn.execute(
        f"SELECT {AGENT_COLUMNS} FROM {AGENT_FROM} WHERE lower(a.name) = ? AND a.is_active = 1", (key,)
    ).fetchone()


def get_by_id(conn: Connection, agent_id: int) -> Any:
    return conn.execute(f"SELECT {AGENT_COLUMNS} FROM {AGENT_FROM} WHERE a.id = ?", (agent_id,)).fetchone()


def require_active(conn: Connection, name: str, project: dict[str, Any] | None = None) -> Any:
    row = find_active(conn, name)
    if row is None or (project is not None and row[7] != project["id"]):
        where = f" in project {project['slug']!r}" if project is not None else ""
        raise NotFound(
            f"no active agent named {name!r}{where}; list agents with resource://agents/<project> "
            "or register one with register_agent",
            data={"agent_name": name},
        )
    return row


def is_operator(session: Session | None) -> bool:
    """The CLI, and plain scripts on the socket (no hello: not an agent's shim), act for the user.

    Agents' shims always send a hello (client "shim"), and HTTP sessions are "http": neither is ever
    the operator. The socket is 0600, so only the same OS user reaches this (docs/messaging.md)."""
    if session is None:
        return False
    return session.client == OPERATOR_CLIENT or (session.client == "socket" and not session.persisted)


def is_operator_name(name: str) -> bool:
    return names.lookup_key(name) == names.lookup_key(OPERATOR_NAME)


def hello_refusal(conn: Connection, session: Session, row: Any, online: set[int]) -> str | None:
    """Why a hello naming the existing agent `row` must not bind the session (None: it may).

    A hello proves nothing by itself: any process of the user can send one. So it binds when it
    carries the agent's token (AGENT_MAIL_TOKEN), or — the editor-config convenience — when the
    agent was registered under that same configured name and is offline right now. It never takes
    over an agent that is online, nor one that registered itself by name (it holds a token)."""
    if session.vouched or token_matches(conn, row[0], session.hello_token):
        return None
    name = row[1]
    fix = (
        f" Set AGENT_MAIL_TOKEN to {name}'s registration_token in this client's environment (the editor's MCP "
        f"config for `mailctl mcp`; or mailctl --token), pass registration_token / sender_token with the call, "
        "or call register_agent with another name."
    )
    if session.hello_token:
        return f"this session's hello named {name} with a token that is not {name}'s, so it is not bound." + fix
    if row[14]:
        return (f"{name} was created as a mail recipient and has not registered yet: call register_agent "
                "(it claims the name and the mail already sent to it).")
    if row[0] in online:
        return f"{name} is online in another session, so a hello naming it without its token does not bind." + fix
    if not row[15]:
        return (f"{name} registered through register_agent (not under this shim's configured name), so a hello "
                "naming it needs its token." + fix)
    return None


def bind(conn: Connection, session: Session | None, agent_id: int) -> None:
    """Bind the calling session to an agent, persistently when the session has a row."""
    if session is None:
        return
    session.agent_id = agent_id
    if session.persisted:
        conn.execute("UPDATE sessions SET agent_id = ? WHERE id = ?", (agent_id, session.id))


def acting_agent(
    conn: Connection, session: Session | None, name: str | None, token: str | None, *, param: str = "agent_name"
) -> Any:
    """The agent the caller acts as: its bound agent, or `name` if bound to it or holding its token."""
    if name is None or not name.strip():
        if session is not None and session.agent_id is not None:
            row = get_by_id(conn, session.agent_id)
            if row is not None and row[10]:
                return row
            raise AuthenticationRequired(
                "the agent this session was bound to has been retired; call register_agent again",
                data={"parameter": param},
            )
        if session is not None and session.binding_refused:
            raise AuthenticationRequired(
                session.binding_refused, data={"parameter": param, "agent_name": session.requested_agent}
            )
        raise InvalidArgument(
            f"{param} is required: this session is not bound to an agent yet. Call register_agent first "
            "(it binds the session), or pass the agent's name",
            data={"parameter": param},
        )
    validate_name(name, param)
    row = find_active(conn, name)
    if row is None:
        raise NotFound(
            f"no active agent named {name!r}; register it with register_agent", data={"agent_name": name}
        )
    if session is not None and session.agent_id == row[0]:
        return row
    if token_matches(conn, row[0], token):
        return row
    bound = ""
    if session is not None and session.agent_id is not None:
        current = get_by_id(conn, session.agent_id)
        bound = f" This session is bound to {current[1]}." if current is not None else ""
    raise AuthenticationRequired(
        f"acting as {row[1]} requires {row[1]}'s registration_token (returned once by register_agent; "
        f"pass it as sender_token / registration_token), or calling from {row[1]}'s own session.{bound} "
        "Omit the name to act as your own agent.",
        data={"agent_name": row[1], "parameter": param},
    )


def _generate_free_name(conn: Connection) -> str:
    rng = secrets.SystemRandom()
    for _ in range(256):
        candidate = names.generate(rng)
        if find_active(conn, candidate) is None:
            return candidate
    for _ in range(1000):  # an extremely crowded mailbox: add digits rather than fail
        candidate = f"{names.generate(rng)}{rng.randint(2, 9999)}"
        if find_active(conn, candidate) is None:
            return candidate
    raise NameTaken("could not find a free agent name; retire unused agents and retry")


# Releases (and archives) every lease of a retired agent. Set by the composition root to
# reservations.release_all_of_agent: this module must not import reservations (which imports it).
RetireHook = Callable[[Connection, int, str], int]


def retire_in(conn: Connection, row: Any, now: str, release_leases: RetireHook | None) -> int:
    """Retire an agent: inactive (its name is free again), unbound, leases released. Keeps its mail."""
    conn.execute("UPDATE agents SET is_active = 0, deleted_ts = ? WHERE id = ?", (now, row[0]))
    conn.execute("UPDATE sessions SET agent_id = NULL WHERE agent_id = ?", (row[0],))
    enqueue(conn, "agent", row[13], {"agent": agent_dict(get_by_id(conn, row[0]))})
    return release_leases(conn, row[0], now) if release_leases is not None else 0


def _create(
    conn: Connection, project: dict[str, Any], name: str, fields: dict[str, str],
    *, placeholder: bool = False, named_by_env: bool = False,
) -> tuple[Any, str]:
    now = utcnow()
    token = secrets.token_urlsafe(24)
    try:
        agent_id = conn.execute(
            "INSERT INTO agents(project_id, name, program, model, task_description, attachments_policy,"
            " inception_ts, last_active_ts, token_hash, placeholder, named_by_env)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (project["id"], name, fields["program"], fields["model"], fields["task_description"],
             fields["attachments_policy"], now, now, hash_token(token), int(placeholder), int(named_by_env)),
        ).get
    except IntegrityError:
        raise NameTaken(
            f"the name {name!r} was just claimed by another registration; retry or pick another name",
            data={"name": name, "race_condition": True},
        ) from None
    row = get_by_id(conn, agent_id)
    enqueue(conn, "agent", project["slug"], {"agent": agent_dict(row)})
    return row, token


def _refuse_system_name(clean: str | None) -> None:
    if clean is not None and names.lookup_key(clean) == names.lookup_key(SYSTEM_NAME):
        raise NameTaken(f"{SYSTEM_NAME} is the daemon's own identity (ack reminders); choose another name",
                        data={"name": SYSTEM_NAME})


def register_in(
    conn: Connection,
    session: Session | None,
    mode: str,
    online: set[int],
    project_key: str,
    requested: str | None,
    fields: dict[str, str],
    *,
    force_reclaim: bool,
    token: str | None,
    always_new: bool = False,
    rebind: bool = False,
    release_leases: RetireHook | None = None,
) -> dict[str, Any]:
    """The whole name-claim decision, inside one IMMEDIATE transaction."""
    project = ensure_in(conn, project_key) if not always_new else find_in(conn, project_key)
    clean: str | None = None
    if requested is not None:
        clean = names.sanitize(validate_name(requested)) or None
        if clean is None and mode == "strict":
            raise InvalidArgument(
                f"{requested!r} has no letters or digits; agent names look like 'BlueLake' (or omit the name)"
            )
    operator = clean is not None and is_operator_name(clean)
    if operator and not is_operator(session):
        raise NameTaken(
            f"{OPERATOR_NAME} is reserved for the person at the command line (mailctl); choose another name",
            data={"name": OPERATOR_NAME},
        )
    _refuse_system_name(clean)
    if mode == "always_auto" and not operator:
        clean = None  # the operator keeps its name, or every CLI call would mint a new identity
    # Registered under the name this session's hello gave (the editor config): see hello_refusal.
    by_env = bool(
        clean and session is not None and session.requested_agent
        and names.lookup_key(session.requested_agent) == names.lookup_key(clean)
    )
    if clean is not None and names.is_reserved(clean):
        raise NameTaken(f"{clean!r} is reserved (it addresses every agent of a project); choose another name",
                        data={"name": clean})
    clean = _keep_binding(conn, session, clean, token, rebind=rebind or always_new or operator)
    now = utcnow()
    if clean is not None:
        existing = find_active(conn, clean)
        if existing is not None and existing[14]:
            return _claim(conn, session, project, existing, fields, by_env)
        if existing is not None:
            authorized = (
                (session is not None and session.agent_id == existing[0])
                or token_matches(conn, existing[0], token)
                or operator
            )
            if authorized and not always_new:
                unchanged = (
                    existing[2] == fields["program"] and existing[3] == fields["model"]
                    and existing[4] == fields["task_description"] and existing[8] == fields["attachments_policy"]
                    and existing[7] == project["id"]
                )
                conn.execute(
                    "UPDATE agents SET program = ?, model = ?, task_description = ?, attachments_policy = ?,"
                    " last_active_ts = ?, project_id = ?, named_by_env = max(named_by_env, ?) WHERE id = ?",
                    (fields["program"], fields["model"], fields["task_description"],
                     fields["attachments_policy"], now, project["id"], int(by_env), existing[0]),
                )
                bind(conn, session, existing[0])
                row = get_by_id(conn, existing[0])
                if not unchanged:  # the archive records profile changes, not every re-registration
                    enqueue(conn, "agent", project["slug"], {"agent": agent_dict(row)})
                return {**agent_dict(row), "created": False}
            conflict = {"name": existing[1], "project": existing[13], "online": existing[0] in online}
            if mode == "strict" and not force_reclaim:
                raise NameTaken(
                    f"{existing[1]} is already registered (project {existing[13]!r}); pass its "
                    "registration_token to re-register it, choose another name, or force_reclaim=true",
                    data={"conflicting_agents": [conflict]},
                )
            mine = always_new and session is not None and session.agent_id == existing[0]
            if existing[0] in online and not force_reclaim and not mine:
                raise NameTaken(
                    f"{existing[1]} is online in another session; pass its registration_token, "
                    "choose another name, or force_reclaim=true to retire it",
                    data={"conflicting_agents": [conflict]},
                )
            retire_in(conn, existing, now, release_leases)
            clean = existing[1]  # a reclaimed name keeps its established spelling
    name = clean if clean is not None else _generate_free_name(conn)
    row, new_token = _create(conn, project, name, fields, named_by_env=by_env)
    bind(conn, session, row[0])
    return {**agent_dict(row), "created": True, "registration_token": new_token}


def _keep_binding(conn: Connection, session: Session | None, clean: str | None, token: str | None, *,
                  rebind: bool) -> str | None:
    """The name to register when the session is already bound: no name means its own agent; another
    agent's name needs rebind=true or that agent's token (a silent rebind would send later mail
    under the new name)."""
    if rebind or is_operator(session) or session is None or session.agent_id is None:
        return clean
    bound = get_by_id(conn, session.agent_id)
    if bound is None or not bound[10]:
        return clean
    if clean is None:
        return str(bound[1])
    if names.lookup_key(clean) == names.lookup_key(bound[1]):
        return clean
    target = find_active(conn, clean)
    if target is not None and token_matches(conn, target[0], token):
        return clean
    raise AlreadyBound(
        f"this session is already bound to {bound[1]}; pass rebind=true to register as {clean} instead "
        f"(later calls then act as {clean}), or {clean}'s registration_token",
        data={"current_agent": agent_dict(bound), "requested": clean, "parameter": "rebind"},
    )


def _claim(
    conn: Connection, session: Session | None, project: dict[str, Any], row: Any, fields: dict[str, str],
    by_env: bool,
) -> dict[str, Any]:
    """The first real registration of an auto-registered recipient's name takes over its row: same
    id, so the mail already sent to it stays in its inbox; its own profile; a fresh token."""
    now = utcnow()
    token = secrets.token_urlsafe(24)
    conn.execute(
        "UPDATE agents SET program = ?, model = ?, task_description = ?, attachments_policy = ?, project_id = ?,"
        " inception_ts = ?, last_active_ts = ?, token_hash = ?, placeholder = 0, named_by_env = ? WHERE id = ?",
        (fields["program"], fields["model"], fields["task_description"], fields["attachments_policy"],
         project["id"], now, now, hash_token(token), int(by_env), row[0]),
    )
    bind(conn, session, row[0])
    claimed = get_by_id(conn, row[0])
    enqueue(conn, "agent", project["slug"], {"agent": agent_dict(claimed)})
    return {**agent_dict(claimed), "created": True, "claimed_placeholder": True, "registration_token": token}


def clean_fields(program: str, model: str, task_description: str, attachments_policy: str) -> dict[str, str]:
    values = {"program": program, "model": model, "task_description": task_description}
    for key, value in values.items():
        if len(value) > MAX_FIELD_CHARS[key]:
            raise InvalidArgument(f"{key} is {len(value)} characters; at most {MAX_FIELD_CHARS[key]}")
    policy = attachments_policy if attachments_policy in ATTACHMENT_POLICIES else "auto"
    return {**values, "attachments_policy": policy}


def recent_commits(archive: Path, project_slug: str, name: str, limit: int) -> list[dict[str, Any]]:
    """The last commits touching this agent's archive folder (empty until the archive exists)."""
    if not (archive / ".git").exists() and not (archive / "HEAD").exists():
        return []
    try:
        out = subprocess.run(
            ["git", "-C", str(archive), "log", f"-n{limit}", "--format=%H%x1f%s%x1f%aI", "--",
             f"projects/{project_slug}/agents/{name}"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    commits = []
    for line in out.splitlines():
        sha, summary, when = [*line.split("\x1f"), "", ""][:3]
        commits.append({"hexsha": sha[:12], "summary": summary, "authored_ts": when})
    return commits


class Agents:
    def __init__(self, store: Store, sessions: Sessions, settings: Settings, archive: Path) -> None:
        self._store = store
        self._sessions = sessions
        self._settings = settings
        self._archive = archive
        # Set by the composition root (reservations.release_all_of_agent); see RetireHook.
        self.on_retire: RetireHook | None = None

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def archive(self) -> Path:
        return self._archive

    async def project_key_of(self, agent_id: int) -> str | None:
        """The human key of an agent's project (the default project_key of its session)."""
        key = await self._store.read(
            lambda c: c.execute(
                "SELECT p.human_key FROM agents a JOIN projects p ON p.id = a.project_id WHERE a.id = ?", (agent_id,)
            ).get
        )
        return None if key is None else str(key)

    async def name_of(self, agent_id: int) -> str | None:
        name = await self._store.read(lambda c: c.execute("SELECT name FROM agents WHERE id = ?", (agent_id,)).get)
        return None if name is None else str(name)

    def online_ids(self) -> set[int]:
        return {s.agent_id for s in self._sessions.live() if s.agent_id is not None}

    async def register(
        self,
        session: Session | None,
        project_key: str,
        program: str,
        model: str,
        name: str | None,
        task_description: str,
        attachments_policy: str,
        *,
        force_reclaim: bool,
        token: str | None,
        always_new: bool = False,
        rebind: bool = False,
    ) -> dict[str, Any]:
        key = validate_project_key(project_key)
        fields = clean_fields(program, model, task_description, attachments_policy)
        requested = name if name is not None else (session.requested_agent if session is not None else None)
        mode, online = self._settings.name_enforcement_mode, self.online_ids()

        def unit(conn: Connection) -> dict[str, Any]:
            return register_in(
                conn, session, mode, online, key, requested, fields,
                force_reclaim=force_reclaim, token=token, always_new=always_new, rebind=rebind,
                release_leases=self.on_retire,
            )

        return await self._store.write(unit)

    async def bind_requested(self, session: Session) -> None:
        """Bind a session whose hello named an existing agent (the shim's AGENT_MAIL_NAME), if
        `hello_refusal` allows it; otherwise record why, for the session's first identity-needing call."""
        if session.agent_id is not None or not session.requested_agent:
            return

        def decide(conn: Connection) -> None:
            row = find_active(conn, session.requested_agent or "")
            if row is None:
                return  # register_agent will create it under this name
            # Presence is read inside the single writer's unit: two hellos racing for one offline
            # agent are serialised here, and the second sees the first one's binding.
            refusal = hello_refusal(conn, session, row, self.online_ids())
            if refusal is None:
                bind(conn, session, row[0])
            else:
                session.binding_refused = refusal

        await self._store.write(decide)

    async def whois(
        self, project_key: str, agent_name: str, include_recent_commits: bool, commit_limit: int
    ) -> dict[str, Any]:
        key = validate_project_key(project_key)
        validate_name(agent_name, "agent_name")

        def lookup(conn: Connection) -> tuple[Any, Any]:
            row = require_active(conn, agent_name, find_in(conn, key))
            seen = conn.execute(
                "SELECT max(last_seen_ts) FROM sessions WHERE agent_id = ?", (row[0],)
            ).get
            return row, seen

        row, seen = await self._store.read(lookup)
        result = {**agent_dict(row), **self.presence(row, seen)}
        if include_recent_commits:
            limit = max(1, min(50, commit_limit))
            result["recent_commits"] = await anyio.to_thread.run_sync(
                recent_commits, self._archive, row[13], row[1], limit
            )
        return result

    async def profile(self, agent_name: str, project_key: str | None) -> dict[str, Any]:
        """An active agent by name (in `project_key`'s project when one is given): agent_dict and presence."""
        validate_name(agent_name, "agent")
        key = validate_project_key(project_key) if project_key else None

        def lookup(conn: Connection) -> Any:
            return require_active(conn, agent_name, find_in(conn, key) if key is not None else None)

        row = await self._store.read(lookup)
        return {**agent_dict(row), **self.presence(row, None)}

    def presence(self, row: Any, last_session_ts: str | None) -> dict[str, Any]:
        online = row[0] in self.online_ids()
        last_seen = max(filter(None, [last_session_ts, row[6]]), default=None)
        return {"online": online, "last_seen_ts": utcnow() if online else last_seen}
