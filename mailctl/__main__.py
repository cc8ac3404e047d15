"""The `mailctl` entry point: `mailctl hook ...` goes straight to the light hook runner (it runs on
every prompt and edit of a coding client) and a plain `mailctl mcp` straight to the stdio shim (an
editor spawns one per agent); everything else loads the full command line."""

from __future__ import annotations

import sys

GLOBAL_OPTIONS = ("--root", "--agent", "--tools")


def hook_argv(argv: list[str]) -> list[str] | None:
    """The hook runner's arguments when `argv` is a `hook` command (global options may come first)."""
    index = 0
    while index < len(argv):
        word = argv[index]
        if word in GLOBAL_OPTIONS:
            index += 2
        elif word.split("=", 1)[0] in GLOBAL_OPTIONS:
            index += 1
        elif word == "hook":
            return argv[:index] + argv[index + 1 :]
        else:
            return None
    return None


def mcp_options(argv: list[str]) -> dict[str, str] | None:
    """`--root`/`--agent`/`--tools` when `argv` is a plain `mailctl mcp` (the options before or after
    `mcp`, as `--opt value` or `--opt=value`); None for anything else (--help, --remote, a bad value,
    a missing --root directory), which the full command line handles and words the errors of."""
    from pathlib import Path

    from shared.paths import USER_ROOT_ALIASES  # the shim loads both anyway

    options: dict[str, str] = {}
    seen = False
    index = 0
    while index < len(argv):
        word = argv[index]
        name, equals, value = word.partition("=")
        if word == "mcp" and not seen:
            seen, index = True, index + 1
        elif name in ("--root", "--agent", "--tools") and (equals or index + 1 < len(argv)):
            value = value if equals else argv[index + 1]
            if not value or value.startswith("-"):
                return None
            options[name[2:]] = value
            index += 1 if equals else 2
        else:
            return None
    if not seen or options.get("tools", "core") not in ("core", "extended"):
        return None
    root = options.get("root")
    if root is not None and root not in USER_ROOT_ALIASES and not Path(root).expanduser().is_dir():
        return None
    return options


def main() -> int:
    argv = sys.argv[1:]
    hook = hook_argv(argv)
    if hook is not None:
        from mailctl.hooks import main as run_hook

        return run_hook(hook)
    mcp = mcp_options(argv)
    if mcp is not None:  # an editor spawns this for every agent: start the relay without the CLI
        from mailctl.shim import main as run_shim

        return run_shim(mcp.get("root"), mcp.get("agent"), mcp.get("tools"))
    from mailctl.cli import main as run_cli

    return run_cli(argv)


if __name__ == "__main__":
    sys.exit(main())
