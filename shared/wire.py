"""One connection to a running maild, light enough for a process whose whole cost is start-up.

Client hooks (`mailctl hook`) run on every prompt and edit of a coding client; they use `Wire`
instead of `shared.client.DaemonClient`, which loads socket.py, pathlib and typing (~6 ms together
before the first byte is sent). Same checks as DaemonClient: the state dir and socket are ours, the
listening process runs as us (SO_PEERCRED). Does not start daemons or handle long socket paths: a
caller that needs those uses `shared.client` (the reply decoding here is shared with it).
"""

from __future__ import annotations

import _socket  # socket.py wraps this with enums and makefile(); a hook needs neither (see above)
import json
import os
import time

from shared.errors import DaemonUnavailable, MailError, ProtocolError, UnsafeStateDir, from_dict
from shared.paths import verify_private
from shared.protocol import CLIENT_CAPABILITIES_META_KEY, MODERN_PROTOCOL_VERSION, PROTOCOL_VERSION_META_KEY

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# A hook must answer its client promptly; the client's own hook timeout is the backstop.
DEFAULT_TIMEOUT = 30.0


def verify_peer(sock: _socket.socket, path: str | os.PathLike[str]) -> None:
    """The process on the other end must run as this user (Linux `SO_PEERCRED`; elsewhere the file
    checks before connecting are what we have)."""
    option = getattr(_socket, "SO_PEERCRED", None)
    if option is None:
        return
    import struct  # 0.3 ms; SO_PEERCRED's struct ucred is three native ints (pid, uid, gid)

    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(_socket.SOL_SOCKET, option, struct.calcsize("3i")))
    if uid != os.geteuid():
        raise UnsafeStateDir(
            f"the process listening on {path} (pid {pid}) runs as uid {uid}, not as you: nothing was sent "
            f"to it. Remove {os.path.dirname(os.fspath(path))} (or ask its owner to), or use another "
            "mailbox root (--root)",
            data={"path": str(path), "peer_pid": pid, "peer_uid": uid},
        )


def envelope_meta() -> dict[str, Any]:
    return {PROTOCOL_VERSION_META_KEY: MODERN_PROTOCOL_VERSION, CLIENT_CAPABILITIES_META_KEY: {}}


def answers(reply: Any, request_id: int) -> bool:
    """Whether a frame read is the answer to `request_id` (or a connection-level error); anything
    else — a notification, a reply to an abandoned request — is skipped by the reader."""
    return isinstance(reply, dict) and (reply.get("id") == request_id or ("error" in reply and reply.get("id") is None))


def reply_result(reply: dict[str, Any]) -> dict[str, Any]:
    """A JSON-RPC reply's result, or the error it carries raised as a MailError."""
    if "error" in reply:
        err = reply["error"] if isinstance(reply["error"], dict) else {"message": str(reply["error"])}
        detail = err.get("data")
        if isinstance(detail, dict) and isinstance(detail.get("code"), str):
            raise from_dict(detail)  # a domain error carried by a protocol error (resources)
        raise ProtocolError(f"{err.get('message')} (JSON-RPC {err.get('code')})", data=err)
    result: dict[str, Any] = reply["result"]
    return result


def tool_result(name: str, result: dict[str, Any]) -> Any:
    """A tools/call result's structured content, or the tool's MailError raised."""
    structured = result.get("structuredContent")
    if result.get("isError"):
        payload = (structured or {}).get("error") if isinstance(structured, dict) else None
        if isinstance(payload, dict):
            raise from_dict(payload)
        text = " ".join(c.get("text", "") for c in result.get("content", []))
        raise MailError(text or f"tool {name} failed")
    return structured


class Wire:
    """A blocking connection to the maild listening on `socket_path` (a string). Raises
    DaemonUnavailable when nobody listens there."""

    def __init__(self, socket_path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        verify_private(os.path.dirname(socket_path), "the state directory", fix_mode=True)
        verify_private(socket_path, "the socket")
        self.timeout = timeout
        self._buffer = b""
        self._ids = 0
        self._sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            self._sock.connect(socket_path)
            verify_peer(self._sock, socket_path)
        except (FileNotFoundError, ConnectionRefusedError):
            self._sock.close()
            raise DaemonUnavailable(
                f"maild is not listening on {socket_path}; start it with `mailctl daemon start`"
            ) from None
        except OSError as exc:
            self._sock.close()
            raise DaemonUnavailable(f"cannot reach {socket_path}: {exc.strerror}") from None
        except BaseException:
            self._sock.close()
            raise

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def _line(self, deadline: float) -> bytes:
        while b"\n" not in self._buffer:
            self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise DaemonUnavailable(f"maild did not answer within {self.timeout:g} s; see `mailctl daemon "
                                        "status` and `mailctl daemon logs`") from None
            except OSError as exc:
                raise DaemonUnavailable(f"maild dropped the connection ({exc.strerror or exc}); retry") from None
            if not chunk:
                raise DaemonUnavailable("maild closed the connection; retry (it restarts on demand)")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._ids += 1
        request_id = self._ids
        frame = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": envelope_meta()}}
        try:
            self._sock.sendall(json.dumps(frame, separators=(",", ":")).encode() + b"\n")
        except OSError as exc:
            raise DaemonUnavailable(f"maild dropped the connection ({exc.strerror or exc}); retry") from None
        deadline = time.monotonic() + self.timeout
        while True:
            reply = json.loads(self._line(deadline))
            if answers(reply, request_id):
                return reply_result(reply)

    def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """Call a tool; returns its structured result or raises the tool's MailError."""
        return tool_result(name, self.request("tools/call", {"name": name, "arguments": arguments or {}}))
