"""Installing the git guard: a chain-runner hook in the repository's real hooks directory.

Shared by the CLI (`mailctl guard install|uninstall`) and the daemon's `install_precommit_guard`
tool, so the daemon never imports the client package. The hooks directory comes from
`git rev-parse --git-path hooks` (honours `core.hooksPath` and worktrees). An existing hook is kept
as `<hook>.orig` and run first, as are executables in `hooks.d/<hook>/`; uninstall removes only our
runner and restores `.orig`. What the hook checks lives in `mailctl.guard` (the hook runs it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import InvalidArgument

if TYPE_CHECKING:
    import subprocess

MARKER = "# agent-mail guard chain runner"
HOOKS = ("pre-commit", "pre-push")
PROJECT_CONFIG = "agentmail.project"


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import subprocess  # not at import: the edit-time hook imports this module and rarely runs git

    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)


def default_project_key(repo: Path) -> str:
    """The top-level path of the repository's main checkout, so that all worktrees share a project."""
    common = _git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir").stdout.strip()
    if common and Path(common).name == ".git":
        return str(Path(common).parent)
    top = _git(repo, "rev-parse", "--show-toplevel").stdout.strip()
    return top or str(repo.resolve())


def project_key_for(repo: Path) -> str:
    """The project the guard checks for this repository: what install recorded, else the default."""
    recorded = _git(repo, "config", "--get", PROJECT_CONFIG).stdout.strip()
    return recorded or default_project_key(repo)


def _git_config_files(repo: Path) -> list[Path]:
    """The config files `git config` reads for this checkout (common dir and worktree), found
    without running git: `.git` is a directory, or a `gitdir:` file whose `commondir` leads on."""
    dot = repo / ".git"
    if dot.is_dir():
        return [dot / "config"]
    try:
        gitdir = Path(dot.read_text(encoding="utf-8").split("gitdir:", 1)[1].strip())
    except (OSError, IndexError):
        return []
    gitdir = gitdir if gitdir.is_absolute() else repo / gitdir
    try:
        common = gitdir / (gitdir / "commondir").read_text(encoding="utf-8").strip()
    except OSError:
        common = gitdir
    return [common / "config", gitdir / "config.worktree"]


def cached_project_key(repo: Path, cache: Path) -> str:
    """`project_key_for`, remembered in `cache` until the repository's git config files change
    (one stat per file instead of two `git` processes: the edit-time hook runs on every edit)."""
    import json

    files = _git_config_files(repo)
    signature = [[str(f), st.st_mtime_ns, st.st_size] for f in files if (st := _stat(f)) is not None]
    entry = {"repo": str(repo), "config": signature}
    try:
        stored = json.loads(cache.read_text(encoding="utf-8"))
        if signature and {k: stored.get(k) for k in entry} == entry and isinstance(stored.get("key"), str):
            return str(stored["key"])
    except (OSError, ValueError, AttributeError):
        pass
    key = project_key_for(repo)
    if signature:
        try:
            cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({**entry, "key": key}), encoding="utf-8")
            tmp.replace(cache)
        except OSError:
            pass  # a read-only state dir only costs the next hook the two git calls again
    return key


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def hooks_dir(repo: Path) -> Path:
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--git-path", "hooks"], capture_output=True,
                             text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise InvalidArgument(f"{repo} is not a git repository") from None
    path = Path(out)
    return path if path.is_absolute() else (repo / path).resolve()


def runner_script(hook: str, root: Path) -> str:
    return f"""#!/bin/sh
{MARKER} ({hook}); remove with `mailctl guard uninstall`
hook={hook}
dir=$(dirname "$0")
input=$(cat)
if [ -d "$dir/hooks.d/$hook" ]; then
  for plugin in "$dir/hooks.d/$hook"/*; do
    if [ -x "$plugin" ]; then printf '%s\\n' "$input" | "$plugin" "$@" || exit $?; fi
  done
fi
if [ -x "$dir/$hook.orig" ]; then printf '%s\\n' "$input" | "$dir/$hook.orig" "$@" || exit $?; fi
printf '%s\\n' "$input" | exec "{sys.executable}" -P -m mailctl.guard --root "{root}" --hook "$hook"
"""


def install(repo: Path, root: Path, prepush: bool = False, project_key: str | None = None) -> dict[str, Any]:
    directory = hooks_dir(repo)
    project = (project_key or "").strip() or default_project_key(repo)
    if _git(repo, "config", "--local", PROJECT_CONFIG, project).returncode != 0:
        raise InvalidArgument(f"cannot record {PROJECT_CONFIG} in {repo}'s git config; check its permissions")
    directory.mkdir(parents=True, exist_ok=True)
    installed = []
    for hook in ("pre-commit", "pre-push") if prepush else ("pre-commit",):
        target = directory / hook
        if target.exists() and MARKER not in target.read_text(errors="replace"):
            backup = directory / f"{hook}.orig"
            if backup.exists():
                raise InvalidArgument(f"{target} and {backup} both exist; merge them by hand, then install again")
            target.rename(backup)
        target.write_text(runner_script(hook, root))
        target.chmod(0o755)
        installed.append(str(target))
    return {"hooks": installed, "hooks_dir": str(directory), "project_key": project}


def uninstall(repo: Path) -> dict[str, Any]:
    directory = hooks_dir(repo)
    removed = []
    for hook in HOOKS:
        target = directory / hook
        if target.exists() and MARKER in target.read_text(errors="replace"):
            target.unlink()
            removed.append(str(target))
            backup = directory / f"{hook}.orig"
            if backup.exists():
                backup.rename(target)
    if removed:
        _git(repo, "config", "--local", "--unset", PROJECT_CONFIG)
    return {"removed": removed}
