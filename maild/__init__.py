"""maild: the per-mailbox daemon. Owns the SQLite store and the Git archive; serves MCP on a socket.

Read `maild/app.py` first: it wires the layers (transport -> mcp_surface -> services -> store).
"""

from shared import __version__

__all__ = ["__version__"]
