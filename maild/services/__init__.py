"""Domain rules. Services know nothing of MCP, HTTP or sockets; they raise `shared.errors`."""
