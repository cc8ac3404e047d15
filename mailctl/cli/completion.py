"""`mailctl completion bash|zsh|fish`: print a shell completion script for every command and flag.

Generated from the same argparse parser the CLI runs (with `shtab`), so a new command or flag is
completed without anyone editing a script. Static: completing never starts the daemon.
"""

from __future__ import annotations

import argparse

from mailctl.cli.common import add_subcommand

SHELLS = ("bash", "zsh", "fish")
INSTALL = {
    "bash": "mailctl completion bash > ~/.local/share/bash-completion/completions/mailctl",
    "zsh": "mailctl completion zsh > ~/.zfunc/_mailctl   # with fpath+=(~/.zfunc) before compinit in ~/.zshrc",
    "fish": "mailctl completion fish > ~/.config/fish/completions/mailctl.fish",
}


def run(args: argparse.Namespace) -> int:
    import shtab

    from mailctl.cli import build_parser

    print(shtab.complete(build_parser(), shell=args.shell), end="")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_subcommand(
        sub, "completion",
        "Print a shell completion script. Install it with one of:\n  " + "\n  ".join(INSTALL.values()),
        "mailctl completion bash > ~/.local/share/bash-completion/completions/mailctl",
    )
    parser.add_argument("shell", choices=SHELLS, help="the shell to complete for")
    parser.set_defaults(handler=run)
