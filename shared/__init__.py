"""Code shared by the daemon (maild) and the light client (mailctl).

Everything here imports only the standard library (plus `platformdirs` in paths), so the stdio
shim and the CLI stay fast to start. Never import apsw, git, mcp or maild from this package.
"""

__version__ = "0.1.0"
