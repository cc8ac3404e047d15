"""Installing the git guard: a chain-runner hook in the repository's real hooks directory.

Shared by the CLI (`mailctl guard install|uninstall`) and the daemon's `install_precommit_guard`
tool, so the daemon never imports the client package. The hooks directory comes from
`git rev-parse --git-path hooks` (honours `core.hooksPath` and worktrees). An existing hook is kept
as `<hook>.orig` and run first, as are executables in `hooks.d/<hook>/`; uninstall removes only our
runner and restores `.orig`. What the hook checks lives in `mailctl.guard` (the hook runs it).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from shared.errors import InvalidArgument

MARKER = "# agent-mail guard chain runner"
HOOKS = ("pre-commit", "pre-push")
PROJECT_CONFIG = "agentmail.project"


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
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


def hooks_dir(repo: Path) -> Path:
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
