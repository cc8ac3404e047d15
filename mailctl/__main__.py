"""The `mailctl` entry point: `mailctl hook ...` goes straight to the light hook runner (it runs on
every prompt and edit of a coding client); everything else loads the full command line."""

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


def main() -> int:
    argv = sys.argv[1:]
    hook = hook_argv(argv)
    if hook is not None:
        from mailctl.hooks import main as run_hook

        return run_hook(hook)
    from mailctl.cli import main as run_cli

    return run_cli(argv)


if __name__ == "__main__":
    sys.exit(main())
