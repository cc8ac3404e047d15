"""How the CLI shows results: rich tables and colour for a person at a terminal, plain lines otherwise.

A command builds its output once as a `View` (a table, key/value facts, notes) and this module picks
the rendering: on a TTY, `rich` (imported lazily, so scripts and the editor's shim never pay for it);
when piped, stable tab-free lines a script can `grep`/`cut`, without colour or markup. `--json` never
comes here (see `common.print_json`). `NO_COLOR` turns colour off; the layout stays.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

_MARK = re.compile(r"<mark>(.*?)</mark>", re.DOTALL)


def is_tty() -> bool:
    return sys.stdout.isatty()


@dataclass
class Column:
    header: str
    style: str = ""
    justify: str = "left"
    # Plain output: pad to this width (0: last column, unpadded). Rich sizes columns itself.
    width: int = 0
    no_wrap: bool = False


@dataclass
class View:
    """What a command shows: an optional title line, a table, and notes (legend, hints) after it."""

    columns: list[Column] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    title: str = ""
    notes: list[str] = field(default_factory=list)
    # Per-row rich style (e.g. bold for unread mail); ignored in plain output.
    row_styles: list[str] = field(default_factory=list)
    empty: str = ""


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, no_color=bool(os.environ.get("NO_COLOR")))


def show(view: View) -> None:
    """Print a view for a person (TTY) or a script (anything else)."""
    if is_tty():
        _show_rich(view)
    else:
        _show_plain(view)


def _show_plain(view: View) -> None:
    out = sys.stdout
    if view.title:
        out.write(view.title + "\n")
    if not view.rows and view.empty:
        out.write(view.empty + "\n")
    for row in view.rows:
        cells = []
        for column, cell in zip(view.columns, row, strict=True):
            text = strip_marks(cell)
            cells.append(text.ljust(column.width) if column.width else text)
        out.write("  ".join(cells).rstrip() + "\n")
    for note in view.notes:
        out.write(note + "\n")


def _show_rich(view: View) -> None:
    from rich import box
    from rich.table import Table

    con = console()
    if view.title:
        con.print(view.title, style="bold", markup=False)
    if not view.rows and view.empty:
        con.print(view.empty, style="dim", markup=False)
    elif view.columns:
        table = Table(box=box.SIMPLE_HEAD, header_style="bold cyan", pad_edge=False, show_edge=False)
        for column in view.columns:
            table.add_column(column.header, style=column.style or None, justify=column.justify,  # type: ignore[arg-type]
                             no_wrap=column.no_wrap)
        for index, row in enumerate(view.rows):
            style = view.row_styles[index] if index < len(view.row_styles) else ""
            table.add_row(*(marked_text(cell) for cell in row), style=style or None)
        con.print(table)
    for note in view.notes:
        con.print(note, style="dim", markup=False)


def marked_text(text: str) -> Any:
    """A rich Text where the search engine's `<mark>…</mark>` spans are highlighted (bold, reverse)."""
    from rich.text import Text

    out = Text()
    position = 0
    for found in _MARK.finditer(text):
        out.append(text[position:found.start()])
        out.append(found.group(1), style="bold reverse yellow")
        position = found.end()
    out.append(text[position:])
    return out


def strip_marks(text: str) -> str:
    return _MARK.sub(r"\1", text)


def print_block(title: str, facts: list[tuple[str, str]], body: str | None = None) -> None:
    """One record (a message, a report): a bold title, aligned `key: value` facts, then a body.

    The body is printed as it is, byte for byte (markdown source), on a TTY too: rendering it
    would hide what the sender actually wrote."""
    width = max((len(key) for key, _ in facts), default=0)
    if is_tty():
        con = console()
        con.print(title, style="bold", markup=False)  # user text: `[x]` in a subject is not markup
        for key, value in facts:
            con.print(f"[cyan]{key + ':':<{width + 1}}[/cyan] ", end="")
            con.print(value, markup=False)
        if body is not None:  # straight to stdout: rich would re-wrap lines and trim trailing spaces
            sys.stdout.write("\n" + body + ("" if body.endswith("\n") else "\n"))
        return
    out = sys.stdout
    out.write(title + "\n")
    for key, value in facts:
        out.write(f"{key + ':':<{width + 1}} {value}\n")
    if body is not None:
        out.write("\n" + body + ("" if body.endswith("\n") else "\n"))


def say(text: str, style: str = "") -> None:
    """One line of prose (a confirmation); coloured on a TTY."""
    if is_tty() and style:
        console().print(text, style=style, markup=False)
    else:
        sys.stdout.write(text + "\n")


def when(stamp: str | None) -> str:
    """`2026-01-01T09:00:00.123Z` -> `2026-01-01 09:00` (UTC, as stored)."""
    return stamp[:16].replace("T", " ") if stamp else "-"
