"""The MCP surface: thin adapters from MCP tools/resources to services. No domain rules here."""
