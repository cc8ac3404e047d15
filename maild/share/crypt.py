"""age encryption of a bundle's zip through pyrage (no external `age` binary needed).

Encrypt to X25519 recipients (`age1…`, repeatable) or with a passphrase (scrypt); decrypt with an
identity file (`AGE-SECRET-KEY-1…` lines, comments allowed) or the passphrase. A wrong key or
passphrase becomes DecryptionFailed with what to try next, never a pyrage traceback.
"""

from __future__ import annotations

from pathlib import Path

import pyrage

from shared.errors import DecryptionFailed, InvalidArgument


def encrypt_file(source: Path, target: Path, recipients: list[str], passphrase: str | None) -> Path:
    if bool(recipients) == bool(passphrase):
        raise InvalidArgument("give either --age-recipient (one or more) or --age-passphrase, not both")
    data = source.read_bytes()
    if passphrase:
        target.write_bytes(pyrage.passphrase.encrypt(data, passphrase))
        return target
    try:
        keys = [pyrage.x25519.Recipient.from_str(r.strip()) for r in recipients]
    except pyrage.RecipientError as exc:
        raise InvalidArgument(f"not an age recipient ({exc}); recipients look like age1… "
                              "(`age-keygen -y KEYFILE` prints one)") from exc
    target.write_bytes(pyrage.encrypt(data, keys))
    return target


def _identities(path: Path) -> list[pyrage.x25519.Identity]:
    if not path.is_file():
        raise InvalidArgument(f"no identity file at {path}; pass the age key file given to you (-i FILE)")
    found = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                found.append(pyrage.x25519.Identity.from_str(line))
            except pyrage.IdentityError as exc:
                raise InvalidArgument(f"{path} holds a malformed age key ({exc})") from exc
    if not found:
        raise InvalidArgument(f"{path} holds no AGE-SECRET-KEY-1… line; is it an age identity file?")
    return found


def decrypt_file(source: Path, target: Path, identity: Path | None, passphrase: str | None) -> Path:
    if bool(identity) == bool(passphrase):
        raise InvalidArgument("give either --identity FILE or --passphrase, not both")
    if not source.is_file():
        raise InvalidArgument(f"no file at {source}; give the .age file made by `mailctl share export --age-…`")
    data = source.read_bytes()
    try:
        if passphrase:
            plain = pyrage.passphrase.decrypt(data, passphrase)
        else:
            assert identity is not None
            plain = pyrage.decrypt(data, _identities(identity))
    except pyrage.DecryptError as exc:
        how = "passphrase" if passphrase else f"identity in {identity}"
        raise DecryptionFailed(f"could not decrypt {source} with this {how} ({exc}); it was encrypted "
                               "for another key or passphrase — ask the sender which one") from exc
    target.write_bytes(plain)
    return target


def generate_identity(path: Path) -> str:
    """Write a new age identity file (mode 0600); return its public recipient (age1…)."""
    if path.exists():
        raise InvalidArgument(f"{path} exists; keys are never overwritten — pick another path")
    ident = pyrage.x25519.Identity.generate()
    path.write_text(f"# public key: {ident.to_public()}\n{ident}\n")
    path.chmod(0o600)
    return str(ident.to_public())
