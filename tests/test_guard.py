"""The git guard in real repositories: blocked, allowed, warned, bypassed, renames, chain runner,
pre-push, daemon down (database fallback), unreadable mailbox, project scoping with a shared
mailbox, worktrees.

Here `mailbox` is each test's own repository as a project on a daemon the module shares (one per
backend), as a checkout sharing a user's mailbox would be; the tests that stop the daemon or damage
its database take `fresh_mailbox`, whose root is the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailctl.guard import project_slug
from maild.services.projects import slugify
from shared.client import DaemonClient
from tests.conftest import Mailbox, ProjectBox, git_init


def git(
    repo: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=check,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def mailbox(project_box: ProjectBox) -> ProjectBox:
    return project_box


def first_commit(root: Path) -> Path:
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    (root / "README").write_text("x")
    git(root, "add", "README")
    git(root, "commit", "-qm", "init")
    return root


@pytest.fixture
def repo(mailbox: Mailbox) -> Path:
    return first_commit(mailbox.root)


def hold(mailbox: Mailbox, name: str, paths: list[str], project: Path | None = None, **extra: Any) -> None:
    key = str(project or mailbox.root)
    with mailbox.client(hello={"session": mailbox.session(f"s-{name}"), "client": "test", "pid": 1}) as conn:
        conn.call_tool("register_agent", {"project_key": key, "program": "p", "model": "m", "name": name})
        conn.call_tool("file_reservation_paths", {"project_key": key, "paths": paths, **extra})


def new_repo(path: Path) -> Path:
    git_init(path)
    git(path, "config", "user.email", "t@example.com")
    git(path, "config", "user.name", "t")
    (path / "README").write_text("x")
    git(path, "add", "README")
    git(path, "commit", "-qm", "init")
    return path.resolve()


def mailctl_in(mailbox: Mailbox, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """mailctl run inside another checkout, aimed at the test's (shared) mailbox root."""
    return subprocess.run([sys.executable, "-P", "-m", "mailctl", *args], env=mailbox.env, cwd=cwd,
                          capture_output=True, text=True, check=True, timeout=60)


def commit(repo: Path, path: str, agent: str, **env: str) -> subprocess.CompletedProcess[str]:
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"change by {agent} {os.urandom(4).hex()}")
    git(repo, "add", path)
    return git(repo, "commit", "-qm", f"edit {path}", env={"AGENT_MAIL_NAME": agent, **env}, check=False)


def test_commit_blocked_allowed_warned_and_bypassed(mailbox: Mailbox, repo: Path) -> None:
    mailbox.mailctl("guard", "install")
    hold(mailbox, "BlueLake", ["src/auth/**"])
    blocked = commit(repo, "src/auth/login.py", "GreenCastle")
    assert blocked.returncode == 1
    assert "reserved by BlueLake" in blocked.stderr
    assert commit(repo, "src/auth/login.py", "BlueLake").returncode == 0, "own reservations never block"
    assert commit(repo, "docs/readme.md", "GreenCastle").returncode == 0
    warned = commit(repo, "src/auth/x.py", "GreenCastle", AGENT_MAIL_GUARD_MODE="warn")
    assert warned.returncode == 0
    assert "warn mode" in warned.stderr
    bypassed = commit(repo, "src/auth/y.py", "GreenCastle", AGENT_MAIL_BYPASS="1")
    assert bypassed.returncode == 0
    assert "BYPASSED" in bypassed.stderr


def test_non_exclusive_and_released_reservations_never_block(mailbox: Mailbox, repo: Path) -> None:
    mailbox.mailctl("guard", "install")
    hold(mailbox, "BlueLake", ["shared/**"], exclusive=False)
    assert commit(repo, "shared/a.py", "GreenCastle").returncode == 0
    with mailbox.client(hello={"session": mailbox.session("s-RedFox"), "client": "test", "pid": 1}) as conn:
        conn.call_tool("register_agent", {"project_key": str(repo), "program": "p", "model": "m", "name": "RedFox"})
        conn.call_tool("file_reservation_paths", {"project_key": str(repo), "paths": ["lib/**"]})
        conn.call_tool("release_file_reservations", {"project_key": str(repo)})
    assert commit(repo, "lib/b.py", "GreenCastle").returncode == 0


def test_renames_out_of_a_reserved_path_are_caught(mailbox: Mailbox, repo: Path) -> None:
    (repo / "core").mkdir()
    (repo / "core" / "engine.py").write_text("engine\n" * 20)
    git(repo, "add", "core/engine.py")
    git(repo, "commit", "-qm", "engine")
    mailbox.mailctl("guard", "install")
    hold(mailbox, "BlueLake", ["core/**"])
    git(repo, "mv", "core/engine.py", "engine.py")
    moved = git(repo, "commit", "-qm", "move", env={"AGENT_MAIL_NAME": "GreenCastle"}, check=False)
    assert moved.returncode == 1
    assert "core/engine.py" in moved.stderr


def test_the_chain_runner_keeps_an_existing_hook_and_uninstall_restores_it(mailbox: Mailbox, repo: Path) -> None:
    hooks = repo / ".git" / "hooks"
    (hooks / "pre-commit").write_text("#!/bin/sh\necho previous-hook >&2\n")
    (hooks / "pre-commit").chmod(0o755)
    (hooks / "hooks.d" / "pre-commit").mkdir(parents=True)
    (hooks / "hooks.d" / "pre-commit" / "lint").write_text("#!/bin/sh\necho plugin-ran >&2\n")
    (hooks / "hooks.d" / "pre-commit" / "lint").chmod(0o755)
    mailbox.mailctl("guard", "install")
    assert (hooks / "pre-commit.orig").exists()
    ran = commit(repo, "a.txt", "GreenCastle")
    assert ran.returncode == 0
    assert "previous-hook" in ran.stderr
    assert "plugin-ran" in ran.stderr
    mailbox.mailctl("guard", "uninstall")
    assert (hooks / "pre-commit").read_text() == "#!/bin/sh\necho previous-hook >&2\n"
    assert not (hooks / "pre-commit.orig").exists()


def test_core_hookspath_is_honoured(mailbox: Mailbox, repo: Path) -> None:
    git(repo, "config", "core.hooksPath", ".githooks")
    mailbox.mailctl("guard", "install")
    assert (repo / ".githooks" / "pre-commit").exists()
    hold(mailbox, "BlueLake", ["x/**"])
    assert commit(repo, "x/1.txt", "GreenCastle").returncode == 1


def test_with_the_daemon_down_the_guard_reads_the_database(fresh_mailbox: Mailbox) -> None:
    mailbox, repo = fresh_mailbox, first_commit(fresh_mailbox.root)
    mailbox.mailctl("guard", "install")
    hold(mailbox, "BlueLake", ["src/**"])
    mailbox.stop()
    blocked = commit(repo, "src/x.py", "GreenCastle")
    assert blocked.returncode == 1
    assert "reserved by BlueLake" in blocked.stderr
    status = mailbox.status()
    assert status is None, "the hook never starts a daemon"


def test_an_unreadable_mailbox_blocks_in_block_mode_and_warns_in_warn_mode(fresh_mailbox: Mailbox) -> None:
    mailbox, repo = fresh_mailbox, first_commit(fresh_mailbox.root)
    mailbox.mailctl("guard", "install")
    hold(mailbox, "BlueLake", ["src/**"])
    mailbox.stop()
    mailbox.paths.db.write_bytes(b"this is not a database" * 100)
    (mailbox.paths.state_dir / "mail.sqlite3-wal").unlink(missing_ok=True)
    blocked = commit(repo, "src/x.py", "GreenCastle")
    assert blocked.returncode == 1
    assert "cannot read the mailbox" in blocked.stderr
    warned = commit(repo, "src/y.py", "GreenCastle", AGENT_MAIL_GUARD_MODE="warn")
    assert warned.returncode == 0


def test_pre_push_checks_the_pushed_commits(mailbox: Mailbox, repo: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main")
    commit(repo, "api/handler.py", "GreenCastle")  # committed before anything was reserved
    mailbox.mailctl("guard", "install", "--prepush")
    hold(mailbox, "BlueLake", ["api/**"])
    pushed = git(repo, "push", "-q", "origin", "main", env={"AGENT_MAIL_NAME": "GreenCastle"}, check=False)
    assert pushed.returncode != 0
    assert "api/handler.py" in pushed.stderr


def test_mcp_tools_install_and_uninstall_the_guard(mailbox: Mailbox, repo: Path) -> None:
    with DaemonClient(mailbox.paths) as conn:
        installed = conn.call_tool("install_precommit_guard", {"project_key": "Backend", "code_repo_path": str(repo)})
        assert installed["hooks"] == [str(repo / ".git" / "hooks" / "pre-commit")]
        assert git(repo, "config", "--get", "agentmail.project").stdout.strip() == "Backend"
        removed = conn.call_tool("uninstall_precommit_guard", {"code_repo_path": str(repo)})
        assert removed["removed"] == installed["hooks"]


def test_pre_push_catches_renames_out_of_a_reserved_path(mailbox: Mailbox, repo: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    git(repo, "remote", "add", "origin", str(remote))
    (repo / "core").mkdir()
    (repo / "core" / "engine.py").write_text("engine\n" * 20)
    git(repo, "add", "core/engine.py")
    git(repo, "commit", "-qm", "engine")
    git(repo, "push", "-q", "origin", "main")
    git(repo, "mv", "core/engine.py", "engine.py")
    git(repo, "commit", "-qm", "move it out")  # before anything was reserved or the guard installed
    mailbox.mailctl("guard", "install", "--prepush")
    hold(mailbox, "BlueLake", ["core/**"])
    pushed = git(repo, "push", "-q", "origin", "main", env={"AGENT_MAIL_NAME": "GreenCastle"}, check=False)
    assert pushed.returncode != 0, "the old side of the rename is under core/**"
    assert "core/engine.py" in pushed.stderr


def test_a_reservation_in_one_repository_never_blocks_another_sharing_the_mailbox(
    fresh_mailbox: Mailbox, tmp_path: Path
) -> None:
    mailbox = fresh_mailbox
    first, second = new_repo(tmp_path / "first"), new_repo(tmp_path / "second")
    for checkout in (first, second):
        installed = json.loads(mailctl_in(mailbox, checkout, "guard", "install", "--json").stdout)
        assert installed["project_key"] == str(checkout)
        assert git(checkout, "config", "--get", "agentmail.project").stdout.strip() == str(checkout)
    hold(mailbox, "BlueLake", ["src/**"], project=first)
    assert commit(second, "src/a.py", "GreenCastle").returncode == 0, "another project's reservation"
    blocked = commit(first, "src/a.py", "GreenCastle")
    assert blocked.returncode == 1
    assert "reserved by BlueLake" in blocked.stderr
    mailbox.stop()  # the database fallback is scoped the same way
    assert commit(second, "src/b.py", "GreenCastle").returncode == 0
    assert commit(first, "src/b.py", "GreenCastle").returncode == 1


def test_an_explicit_project_key_is_recorded_and_checked(mailbox: Mailbox, repo: Path) -> None:
    mailbox.mailctl("guard", "install", "--project", "Backend")
    assert git(repo, "config", "--get", "agentmail.project").stdout.strip() == "Backend"
    hold(mailbox, "BlueLake", ["api/**"])  # in the project named by the repository path
    assert commit(repo, "api/x.py", "GreenCastle").returncode == 0
    hold(mailbox, "RedFox", ["api/**"], project=Path("backend"))  # same slug as "Backend"
    assert commit(repo, "api/y.py", "GreenCastle").returncode == 1
    mailbox.mailctl("guard", "uninstall")
    assert git(repo, "config", "--get", "agentmail.project", check=False).returncode != 0


def test_the_guard_installs_and_runs_from_a_linked_worktree(mailbox: Mailbox, repo: Path, tmp_path: Path) -> None:
    worktree = tmp_path / "feature-wt"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(worktree))
    installed = json.loads(mailctl_in(mailbox, worktree, "guard", "install", "--json").stdout)
    common_hooks = repo.resolve() / ".git" / "hooks"
    assert installed["hooks"] == [str(common_hooks / "pre-commit")]
    assert installed["project_key"] == str(repo.resolve()), "worktrees share the main checkout's project"
    hold(mailbox, "BlueLake", ["src/**"])
    blocked = commit(worktree, "src/x.py", "GreenCastle")
    assert blocked.returncode == 1
    assert "reserved by BlueLake" in blocked.stderr
    assert commit(worktree, "src/x.py", "BlueLake").returncode == 0
    assert commit(repo, "src/y.py", "GreenCastle").returncode == 1, "the main checkout runs the same hook"
    removed = json.loads(mailctl_in(mailbox, worktree, "guard", "uninstall", "--json").stdout)
    assert removed["removed"] == installed["hooks"]


@pytest.mark.parametrize("key", ["/home/me/App", "Backend", "my_repo.v2", "***", "  x  "])
def test_the_hook_slugs_project_keys_exactly_as_the_daemon_does(key: str) -> None:
    assert project_slug(key) == slugify(key.strip())


def test_the_cached_project_key_follows_git_config_changes_in_main_and_linked_worktrees(tmp_path: Path) -> None:
    """The edit-time hook caches the project key by the config files' stat; a later
    `git config agentmail.project` (what `guard install --project` records) must be seen at once."""
    from shared.guard_install import PROJECT_CONFIG, cached_project_key, project_key_for

    main = tmp_path / "main"
    git_init(main)
    subprocess.run(["git", "-C", str(main), "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    linked = tmp_path / "linked"
    subprocess.run(["git", "-C", str(main), "worktree", "add", "-q", str(linked)], check=True)
    cache = tmp_path / "state" / "key.json"
    for checkout in (main, linked):
        cache.unlink(missing_ok=True)
        subprocess.run(["git", "-C", str(main), "config", "--unset", PROJECT_CONFIG], check=False)
        assert cached_project_key(checkout, cache) == project_key_for(checkout) == str(main.resolve())
        assert cached_project_key(checkout, cache) == str(main.resolve())  # from the cache file
        subprocess.run(["git", "-C", str(checkout), "config", PROJECT_CONFIG, f"/elsewhere/{checkout.name}"],
                       check=True)
        assert cached_project_key(checkout, cache) == f"/elsewhere/{checkout.name}"
