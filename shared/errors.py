"""The one error hierarchy, with stable codes shared by every surface (MCP, CLI, HTTP).

Domain code raises `MailError` subclasses; they are converted in exactly two places: the MCP
surface (a tool error result carrying `code`) and the CLI's top-level handler (one stderr line and
an exit code). Messages must say what to do next, not only what went wrong.
"""

from __future__ import annotations

# Not `from typing import ...`: typing costs every hook and shim process ~2 ms of start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class MailError(Exception):
    """An error a caller can act on. `code` is stable; `message` is for people and models."""

    code = "INTERNAL_ERROR"
    recoverable = False

    def __init__(self, message: str, *, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data or {}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message, "recoverable": self.recoverable}
        if self.data:
            out["data"] = self.data
        return out


class InvalidArgument(MailError):
    code = "INVALID_ARGUMENT"
    recoverable = True


class NotFound(MailError):
    code = "NOT_FOUND"
    recoverable = True


class NameTaken(MailError):
    code = "NAME_TAKEN"
    recoverable = True


class RecipientNotFound(MailError):
    code = "RECIPIENT_NOT_FOUND"
    recoverable = True


class AuthenticationRequired(MailError):
    code = "AUTHENTICATION_REQUIRED"
    recoverable = True


class ContactRequired(MailError):
    """The recipient accepts mail only from approved contacts (contact policy `contacts_only`)."""

    code = "CONTACT_REQUIRED"
    recoverable = True


class ContactBlocked(MailError):
    """The recipient refuses this sender's mail (policy `block_all`, or it declined the contact)."""

    code = "CONTACT_BLOCKED"
    recoverable = True


class AlreadyBound(MailError):
    """register_agent in a session bound to another agent, without rebind=true or that agent's token."""

    code = "ALREADY_BOUND"
    recoverable = True


class SlotNotHeld(MailError):
    """renew_build_slot on a lease the agent does not hold (never acquired, released or expired)."""

    code = "SLOT_NOT_HELD"
    recoverable = True


class StorageError(MailError):
    """The database could not be opened or used (corrupt, foreign, future schema, unwritable)."""

    code = "STORAGE_ERROR"


class DaemonUnavailable(MailError):
    """The client could not reach or start maild."""

    code = "DAEMON_UNAVAILABLE"
    recoverable = True


class UnsafeStateDir(DaemonUnavailable):
    """The socket or its directory belongs to another user (or others can write it): never talk to it,
    since whoever listens there would receive the agent's token and its mail."""

    code = "UNSAFE_STATE_DIR"
    recoverable = False


class ProtocolError(MailError):
    code = "PROTOCOL_ERROR"


class VerificationFailed(MailError):
    """A share bundle's files or signature do not match its manifest (names the files)."""

    code = "VERIFICATION_FAILED"


class DecryptionFailed(MailError):
    """An age file could not be decrypted with the key or passphrase given."""

    code = "DECRYPTION_FAILED"


class InternalError(MailError):
    code = "INTERNAL_ERROR"


_BY_CODE: dict[str, type[MailError]] = {
    cls.code: cls
    for cls in (
        MailError,
        InvalidArgument,
        NotFound,
        NameTaken,
        RecipientNotFound,
        AuthenticationRequired,
        ContactRequired,
        ContactBlocked,
        AlreadyBound,
        SlotNotHeld,
        StorageError,
        DaemonUnavailable,
        UnsafeStateDir,
        ProtocolError,
        VerificationFailed,
        DecryptionFailed,
        InternalError,
    )
}


def from_dict(payload: dict[str, Any]) -> MailError:
    """Rebuild an error received over the wire (the CLI uses this to print and pick an exit code)."""
    cls = _BY_CODE.get(str(payload.get("code")), MailError)
    err = cls(str(payload.get("message", "unknown error")), data=payload.get("data") or {})
    err.code = str(payload.get("code", cls.code))
    if isinstance(payload.get("recoverable"), bool):
        err.recoverable = payload["recoverable"]  # e.g. STORAGE_ERROR for a full disk: retry once there is room
    return err


# CLI exit codes, documented in the README.
EXIT_OK = 0
EXIT_TOOL_ERROR = 1
EXIT_USAGE = 2
EXIT_DAEMON = 3
