"""Reservation pattern overlap, shared by the daemon (grants) and the git guard (its DB fallback).

gitignore-style matching (pathspec, imported lazily): two patterns overlap when either matches the
other taken as a path, or they are equal — a symmetric test. Virtual namespaces (`tool://x`,
`resource://y`) match exactly and never overlap file paths.
"""

from __future__ import annotations

import functools
from typing import Any

BROAD = {"*", "**", "**/*", "/", ".", "./"}


def is_virtual(pattern: str) -> bool:
    return "://" in pattern


@functools.lru_cache(maxsize=4096)
def _spec(pattern: str) -> Any:
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines([pattern])


def matches(pattern: str, path: str) -> bool:
    return bool(_spec(pattern).match_file(path))


def overlaps(a: str, b: str) -> bool:
    if is_virtual(a) or is_virtual(b):
        return a == b
    a = a if a in BROAD else a.strip("/")
    b = b if b in BROAD else b.strip("/")
    return a == b or matches(a, b) or matches(b, a)
