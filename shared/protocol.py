"""Wire constants of the maild socket: newline-delimited JSON-RPC 2.0 whose method set is MCP."""

from __future__ import annotations

# One frame is one line. Larger frames are refused with a JSON-RPC error (the line is discarded).
MAX_FRAME_BYTES = 4 * 1024 * 1024

# Optional first frame of a connection (a notification): binds identity and presence.
HELLO_METHOD = "maild/hello"

# Protocol versions the clients in this repo speak.
LEGACY_PROTOCOL_VERSION = "2025-11-25"
MODERN_PROTOCOL_VERSION = "2026-07-28"
PROTOCOL_VERSION_META_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META_KEY = "io.modelcontextprotocol/clientCapabilities"

# JSON-RPC error codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Answered by the shim for requests in flight when the daemon went away: safe to retry.
RETRYABLE_DISCONNECT = -32099
