"""Editing other programs' config files (JSON and TOML) without disturbing what is already there.

Owns: loading a config as a dict, the three edits `integrate` makes (set a key, add a command
hook, remove what it added), the unified diff for `--dry-run`, and the careful write (backup
first, atomic replace, 0600 when the file holds a token). It knows nothing about which client
uses which file (see `clients.py`) and never talks to the daemon.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import shlex
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import InvalidArgument

BACKUP_SUFFIX = ".agent-mail.bak"
KeyPath = tuple[str, ...]


@dataclass(frozen=True)
class SetKey:
    """Set `keys` (a path of nested tables) to `value`; removal deletes the last key."""

    keys: KeyPath
    value: Any


@dataclass(frozen=True)
class AddHook:
    """A command hook in the Claude Code shape (also Codex's and Gemini's):
    `hooks.<event>` is a list of `{matcher?, hooks: [{type: command, command, timeout}]}` groups."""

    event: str
    command: str
    matcher: str | None = None
    timeout: int = 10
    container: KeyPath = ("hooks",)


@dataclass(frozen=True)
class AddItem:
    """Make sure the list at `keys` holds `item` (other items stay); removal takes only `item` out."""

    keys: KeyPath
    item: Any


Edit = SetKey | AddHook | AddItem


@dataclass
class FileChange:
    """What applying (or removing) a client's edits does to one file."""

    path: Path
    fmt: str  # "json" | "toml"
    before: str | None  # None: the file does not exist
    after: str | None  # None: the file is to be deleted
    created: list[KeyPath] = field(default_factory=list)  # containers this change creates
    secret: bool = False

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        old = (self.before or "").splitlines(keepends=True)
        new = (self.after or "").splitlines(keepends=True)
        label = str(self.path)
        return "".join(difflib.unified_diff(old, new, f"{label} (before)", f"{label} (after)"))


def load(path: Path, fmt: str) -> tuple[str | None, dict[str, Any]]:
    """The file's text and parsed content ({} when missing or empty); a clear error when unparsable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, {}
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}; check its permissions") from None
    if not text.strip():
        return text, {}
    try:
        data = _parse_toml(text) if fmt == "toml" else json.loads(text)
    except ValueError as exc:  # tomllib's and tomlkit's parse errors are ValueErrors too
        raise InvalidArgument(
            f"{path} is not valid {fmt.upper()} ({exc}); fix it (comments are not allowed in JSON configs) "
            "and run integrate again", data={"path": str(path)},
        ) from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{path} must hold a {fmt.upper()} object at the top level; fix it and retry")
    return text, data


def _parse_toml(text: str) -> dict[str, Any]:
    """A TOML document that keeps the user's comments and layout through our edits (tomlkit);
    tomllib first, so a broken file gets the standard library's precise message."""
    import tomlkit

    tomllib.loads(text)
    document: dict[str, Any] = tomlkit.parse(text)
    return document


def dump(data: dict[str, Any], fmt: str) -> str:
    if fmt == "toml":
        import tomlkit

        return tomlkit.dumps(data).rstrip("\n") + "\n"  # a removed table leaves no blank tail
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _table(data: dict[str, Any], keys: KeyPath, created: list[KeyPath]) -> dict[str, Any]:
    node = data
    for depth, key in enumerate(keys):
        child = node.get(key)
        if child is None:
            node[key] = {}
            child = node[key]  # a TOML document stores its own table type, not the dict given
            created.append(keys[: depth + 1])
        elif not isinstance(child, dict):
            raise InvalidArgument(f"expected a table at {'.'.join(keys[: depth + 1])}, found {type(child).__name__}; "
                                  "fix that entry by hand")
        node = child
    return node


def is_our_hook(command: object) -> bool:
    """A hook command integrate wrote: `<.../mailctl> hook <event> ...`."""
    if not isinstance(command, str):
        return False
    try:
        words = shlex.split(command)
    except ValueError:
        return False
    return any(Path(word).name == "mailctl" and nxt == "hook" for word, nxt in itertools.pairwise(words))


def _hook_group(edit: AddHook) -> dict[str, Any]:
    group: dict[str, Any] = {} if edit.matcher is None else {"matcher": edit.matcher}
    group["hooks"] = [{"type": "command", "command": edit.command, "timeout": edit.timeout}]
    return group


def _without_our_hooks(groups: list[Any], keep: dict[str, Any] | None) -> list[Any]:
    """Drop our hook commands from `groups` (except the group equal to `keep`), and groups we emptied."""
    out = []
    for group in groups:
        if keep is not None and group == keep:
            out.append(group)
            continue
        inner = group.get("hooks") if isinstance(group, dict) else None
        if not isinstance(inner, list):
            out.append(group)
            continue
        remaining = [h for h in inner if not (isinstance(h, dict) and is_our_hook(h.get("command")))]
        if remaining:
            out.append({**group, "hooks": remaining} if len(remaining) != len(inner) else group)
    return out


def apply_edits(data: dict[str, Any], edits: Sequence[Edit]) -> list[KeyPath]:
    """Apply edits in place; returns the containers created. Idempotent: applying twice changes nothing."""
    created: list[KeyPath] = []
    for edit in edits:
        if isinstance(edit, SetKey):
            _table(data, edit.keys[:-1], created)[edit.keys[-1]] = edit.value
            continue
        if isinstance(edit, AddItem):
            parent = _table(data, edit.keys[:-1], created)
            items = parent.get(edit.keys[-1])
            if items is None:
                parent[edit.keys[-1]] = []
                items = parent[edit.keys[-1]]
                created.append(edit.keys)
            if not isinstance(items, list):
                raise InvalidArgument(f"{'.'.join(edit.keys)} must be a list; fix that entry by hand")
            if edit.item not in items:
                items.append(edit.item)
            continue
        events = _table(data, edit.container, created)
        groups = events.get(edit.event)
        if groups is None:
            groups = []
            created.append((*edit.container, edit.event))
        if not isinstance(groups, list):
            raise InvalidArgument(f"hooks.{edit.event} must be a list; fix that entry by hand")
        wanted = _hook_group(edit)
        kept = _without_our_hooks(groups, wanted)
        if wanted not in kept:
            kept.append(wanted)
        events[edit.event] = kept
    return created


def remove_edits(data: dict[str, Any], edits: Sequence[Edit], created: Sequence[KeyPath]) -> None:
    """Undo `edits`: delete our keys and hook commands, then containers we created that are now empty."""
    for edit in edits:
        if isinstance(edit, SetKey):
            node: Any = data
            for key in edit.keys[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(edit.keys[-1], None)
            continue
        if isinstance(edit, AddItem):
            node = data
            for key in edit.keys:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, list) and edit.item in node:
                node.remove(edit.item)
            continue
        node = data
        for key in edit.container:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(edit.event), list):
            node[edit.event] = _without_our_hooks(node[edit.event], None)
    for keys in sorted((tuple(k) for k in created), key=len, reverse=True):
        parent: Any = data
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and parent.get(keys[-1]) in ({}, []):
            del parent[keys[-1]]


def plan(path: Path, fmt: str, edits: Sequence[Edit], *, secret: bool = False, remove: bool = False,
         created: Sequence[KeyPath] = (), created_file: bool = False) -> FileChange:
    """The change applying (or removing) `edits` would make to `path`, computed without writing."""
    before, data = load(path, fmt)
    if remove:
        if before is None:
            return FileChange(path, fmt, None, None)
        remove_edits(data, edits, created)
        after = None if created_file and not data else dump(data, fmt)
        if after is not None and before is not None and _same(before, after, fmt):
            after = before
        return FileChange(path, fmt, before, after)
    new_containers = apply_edits(data, edits)
    after = dump(data, fmt)
    if before is not None and _same(before, after, fmt):
        after = before  # same content, other formatting: leave the user's file alone
    return FileChange(path, fmt, before, after, created=new_containers, secret=secret)


def _same(before: str, after: str, fmt: str) -> bool:
    try:
        old = tomllib.loads(before) if fmt == "toml" else json.loads(before) if before.strip() else {}
        new = tomllib.loads(after) if fmt == "toml" else json.loads(after)
    except (ValueError, tomllib.TOMLDecodeError):
        return False
    return bool(old == new and list(_keys(old)) == list(_keys(new)))


def _keys(value: Any) -> Any:
    """Every key path in document order (so a reordering counts as a change)."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield key
            yield from _keys(child)
    elif isinstance(value, list):
        for child in value:
            yield from _keys(child)


def write(change: FileChange) -> Path | None:
    """Write a planned change: back the old file up, replace atomically; returns the backup path."""
    if not change.changed:
        return None
    path = change.path
    backup = None
    if change.before is not None:
        backup = path.with_name(path.name + BACKUP_SUFFIX)
        backup.write_text(change.before, encoding="utf-8")
        backup.chmod(0o600)  # the old file may hold a token too
    if change.after is None:
        path.unlink(missing_ok=True)
        return backup
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = 0o600 if change.secret else (path.stat().st_mode & 0o777 if path.exists() else 0o644)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(change.after)
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return backup
