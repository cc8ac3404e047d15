"""The HTTP bridge: Streamable HTTP MCP from the same daemon, behind auth, RBAC and rate limits."""
