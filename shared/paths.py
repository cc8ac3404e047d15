"""Where a mailbox lives: root discovery, the state directory, the socket path and the status file.

Pure functions of the root, so the daemon and every client agree on the same paths without talking.
Does not create daemons or open sockets (see `shared.client`), and imports only the standard
library (platformdirs only for the shared user-level root).
"""

from __future__ import annotations

import json
import os

# pathlib and typing load lazily: every hook process imports this module, and they cost it ~5 ms of
# start-up (mailctl/hooks.py works on strings for the same reason).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

STATE_DIR_NAME = ".mcp_mail"
SOCKET_NAME = "maild.sock"
ROOT_ENV = "AGENT_MAIL_ROOT"
USER_ROOT_ALIASES = ("user", "@user", "~user")
# sun_path holds 108 bytes on Linux and 104 on macOS, NUL included: stay under the smaller.
MAX_SOCKET_PATH_BYTES = 103


def git_toplevel(start: str) -> str | None:
    """The nearest ancestor holding `.git` (a dir, or a file in worktrees), like `git rev-parse`."""
    here = os.path.realpath(start)
    while True:
        if os.path.exists(os.path.join(here, ".git")):  # noqa: PTH110, PTH118 - no pathlib (see imports)
            return here
        parent = os.path.dirname(here)  # noqa: PTH120
        if parent == here:
            return None
        here = parent


def find_git_toplevel(start: Path) -> Path | None:
    """`git_toplevel` for a Path."""
    top = git_toplevel(os.fspath(start))
    return None if top is None else type(start)(top)


def fallback_note(explicit: str | None, root: Path) -> str | None:
    """What a client says (once, on stderr) when no root was chosen and no git repository is here."""
    if explicit or os.environ.get(ROOT_ENV) or git_toplevel(os.getcwd()) is not None:  # noqa: PTH109
        return None
    return (f"note: no git repository here; using the user-level mailbox {root} "
            "(pass --root or set AGENT_MAIL_ROOT to choose another)")


def user_root() -> Path:
    """The shared, user-level mailbox root, for coordinating across several repositories."""
    from pathlib import Path

    import platformdirs

    return Path(platformdirs.user_data_dir("agent-mail", appauthor=False))


def resolve_root_text(explicit: str | os.PathLike[str] | None = None, cwd: str | None = None) -> str | None:
    """`resolve_root` as a string and without pathlib (for hooks), or None when the answer is the
    user-level root (which needs platformdirs: call `resolve_root`)."""
    chosen = explicit if explicit not in (None, "") else os.environ.get(ROOT_ENV) or None
    if chosen is not None:
        text = os.fspath(chosen)
        if text in USER_ROOT_ALIASES:
            return None
        return os.path.realpath(os.path.expanduser(text))  # noqa: PTH111
    return git_toplevel(cwd or os.getcwd())  # noqa: PTH109


def resolve_root(explicit: str | os.PathLike[str] | None = None, cwd: Path | None = None) -> Path:
    """Pick the mailbox root: `--root` > `AGENT_MAIL_ROOT` > git top-level of cwd > user root."""
    from pathlib import Path

    text = resolve_root_text(explicit, None if cwd is None else os.fspath(cwd))
    return user_root() if text is None else Path(text)


def socket_path_text(root: str) -> str | None:
    """`MailboxPaths(root).socket` as a string when it is the preferred one in the state dir (None: too
    long for AF_UNIX, ask MailboxPaths)."""
    path = os.path.join(root, STATE_DIR_NAME, SOCKET_NAME)  # noqa: PTH118
    return path if len(os.fsencode(path)) <= MAX_SOCKET_PATH_BYTES else None


class MailboxPaths:
    """Every file maild and its clients use for one mailbox root. Immutable and hashable.

    A plain class rather than a dataclass: `dataclasses` pulls in `inspect` and `ast`, and this module
    is on the start-up path of every shim and hook process (hashlib and tempfile are lazy for the
    same reason)."""

    __slots__ = ("root",)
    root: Path

    def __init__(self, root: Path) -> None:
        object.__setattr__(self, "root", root)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"MailboxPaths is immutable (cannot set {name})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MailboxPaths) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"MailboxPaths(root={self.root!r})"

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR_NAME

    @property
    def db(self) -> Path:
        return self.state_dir / "mail.sqlite3"

    @property
    def archive(self) -> Path:
        return self.state_dir / "archive"

    @property
    def blobs(self) -> Path:
        """Attachment bytes by sha256 (maild/archive/blobs.py); the archive holds a copy of each."""
        return self.state_dir / "blobs"

    @property
    def status_file(self) -> Path:
        return self.state_dir / "maild.json"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "maild.lock"

    @property
    def spawn_lock_file(self) -> Path:
        return self.state_dir / "spawn.lock"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "maild.log"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "config.toml"

    @property
    def preferred_socket(self) -> Path:
        return self.state_dir / SOCKET_NAME

    @property
    def socket(self) -> Path:
        """The socket path: in the state dir when it fits AF_UNIX, else a short per-user dir."""
        if len(os.fsencode(self.preferred_socket)) <= MAX_SOCKET_PATH_BYTES:
            return self.preferred_socket
        import hashlib

        digest = hashlib.sha256(os.fsencode(self.root)).hexdigest()[:16]
        return short_runtime_dir() / f"{digest}.sock"


def short_runtime_dir() -> Path:
    """A short 0700 directory owned by this user for sockets whose natural path is too long."""
    import tempfile
    from pathlib import Path

    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "agent-mail" if runtime else Path(tempfile.gettempdir()) / f"agent-mail-{os.getuid()}"
    if len(os.fsencode(base)) > 60:  # a long XDG dir would defeat the purpose
        base = Path("/tmp") / f"agent-mail-{os.getuid()}"  # noqa: S108 - private 0700 dir, owner checked below
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = base.stat()
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        from shared.errors import UnsafeStateDir

        raise UnsafeStateDir(
            f"{base} must be a directory owned by you with mode 0700; remove it or fix its permissions"
        )
    return base


def _owner_name(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def verify_private(path: str | Path, what: str, *, fix_mode: bool = False) -> None:
    """Refuse a state dir or socket that another user owns or may write (issue 13: a local user made
    `.mcp_mail` 0777 and listened there). Missing is fine: we create it 0700 ourselves. With
    `fix_mode`, our own group/world-writable dir is tightened to 0700 instead of refused."""
    from shared.errors import UnsafeStateDir

    try:
        info = os.stat(path)  # noqa: PTH116 - a str from hooks, a Path from everyone else
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UnsafeStateDir(f"cannot inspect {path}: {exc.strerror}; check its permissions") from None
    if info.st_uid != os.geteuid():
        raise UnsafeStateDir(
            f"{what} {path} belongs to {_owner_name(info.st_uid)}, not to you: another user may be listening "
            f"there, so nothing was sent. Remove it (or ask its owner to), or use another mailbox root "
            f"(--root / ${ROOT_ENV})",
            data={"path": str(path), "owner_uid": info.st_uid},
        )
    if info.st_mode & 0o022:
        if fix_mode:
            try:
                os.chmod(path, 0o700)  # noqa: PTH101
            except OSError:
                pass
            else:
                return
        raise UnsafeStateDir(
            f"{what} {path} is writable by other users (mode {info.st_mode & 0o777:o}); run `chmod 700 {path}`",
            data={"path": str(path), "mode": f"{info.st_mode & 0o777:o}"},
        )


def read_status(paths: MailboxPaths) -> dict[str, Any] | None:
    """The daemon's status file (pid, socket, version, started_at), or None if absent or unreadable."""
    try:
        data = json.loads(paths.status_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pid_alive(pid: int) -> bool:
    """True if `pid` runs. A zombie, dead but not yet reaped by its parent, counts as dead only once
    all its threads have exited: a killed multi-threaded daemon's main thread turns zombie first,
    and its sockets (the listener too) stay open until the last thread is gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    from pathlib import Path

    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return True  # no procfs (macOS): kill(0) succeeding is all we know
    if state != "Z":
        return True
    try:
        return sum(1 for _ in Path(f"/proc/{pid}/task").iterdir()) > 1
    except OSError:
        return False
