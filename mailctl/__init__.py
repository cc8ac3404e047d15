"""mailctl: the Agent Mail client (CLI, scripts, and the stdio shim editors spawn).

Light by rule: never imports apsw, git, mcp or maild; only the standard library and `shared`
(rich is imported lazily, for people-facing output only).
"""

from shared import __version__

__all__ = ["__version__"]
