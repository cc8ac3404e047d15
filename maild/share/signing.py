"""Ed25519 signatures over a bundle's manifest, and `verify`: every file's sha256 plus the signature.

Keys: a 32-byte Ed25519 seed (or a 64-byte key whose first 32 bytes are the seed), raw or base64,
as the reference accepts. Verification fails, naming the file, on any changed, missing or unlisted
file and on a signature that does not match; it never trusts the viewer's own hashes alone.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from maild.share import bundle
from shared.errors import InvalidArgument, VerificationFailed


def _raw(text_or_bytes: bytes, what: str) -> bytes:
    stripped = text_or_bytes.strip()
    if len(text_or_bytes) in (32, 64):
        return text_or_bytes
    try:
        return base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument(f"{what} is neither 32/64 raw bytes nor base64; make one with "
                              "`mailctl share keygen KEYFILE`") from exc


def load_private_key(path: Path) -> Ed25519PrivateKey:
    if not path.is_file():
        raise InvalidArgument(f"no signing key at {path}; make one with `mailctl share keygen {path}`")
    raw = _raw(path.read_bytes(), f"signing key {path}")
    if len(raw) not in (32, 64):
        raise InvalidArgument(f"signing key {path} has {len(raw)} bytes; an Ed25519 seed has 32 (or 64)")
    return Ed25519PrivateKey.from_private_bytes(raw[:32])


def public_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def keygen(path: Path) -> str:
    """Write a new base64 seed to `path` (mode 0600); return the public key (base64)."""
    if path.exists():
        raise InvalidArgument(f"{path} exists; keys are never overwritten — pick another path")
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    path.write_bytes(base64.b64encode(seed) + b"\n")
    path.chmod(0o600)
    return public_b64(key)


def sign(bundle_dir: Path, key_path: Path) -> dict[str, Any]:
    key = load_private_key(key_path)
    data = (bundle_dir / bundle.MANIFEST).read_bytes()
    record = {
        "algorithm": "ed25519",
        "signature": base64.b64encode(key.sign(data)).decode(),
        "manifest_sha256": hashlib.sha256(data).hexdigest(),
        "public_key": public_b64(key),
        "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    (bundle_dir / bundle.SIGNATURE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _public_key(text: str) -> Ed25519PublicKey:
    candidate = Path(text)
    raw_text = candidate.read_bytes() if len(text) < 4096 and candidate.is_file() else text.encode()
    raw = _raw(raw_text, "public key")
    if len(raw) != 32:
        raise InvalidArgument("an Ed25519 public key has 32 bytes (base64, as in manifest.sig.json)")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify(bundle_dir: Path, public_key: str | None = None) -> dict[str, Any]:
    """Check every file against the manifest and the signature; raise VerificationFailed naming what is wrong."""
    manifest = bundle.read_manifest(bundle_dir)
    listed: dict[str, str] = manifest.get("files") or {}
    problems: list[str] = []
    present = set(bundle.bundle_files(bundle_dir)) - bundle.UNLISTED
    for rel, expected in sorted(listed.items()):
        path = bundle_dir / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif bundle.sha256_file(path) != expected:
            problems.append(f"{rel}: sha256 differs from manifest.json")
    problems += [f"{rel}: not listed in manifest.json" for rel in sorted(present - set(listed))]
    report: dict[str, Any] = {"bundle": str(bundle_dir), "files_checked": len(listed),
                              "signature_checked": False, "signature_verified": False}
    sig_path = bundle_dir / bundle.SIGNATURE
    if sig_path.is_file():
        report["signature_checked"] = True
        try:
            record = json.loads(sig_path.read_text())
            key = _public_key(public_key) if public_key else _public_key(record["public_key"])
            key.verify(base64.b64decode(record["signature"]), (bundle_dir / bundle.MANIFEST).read_bytes())
            report["signature_verified"] = True
        except (InvalidSignature, ValueError, KeyError, TypeError, binascii.Error):
            problems.append(f"{bundle.SIGNATURE}: the signature does not match manifest.json"
                            + (" and the given public key" if public_key else ""))
    elif public_key:
        problems.append(f"{bundle.SIGNATURE}: missing, but a public key was given (the bundle is unsigned)")
    if problems:
        raise VerificationFailed(f"{bundle_dir} failed verification: " + "; ".join(problems[:20]),
                                 data={"problems": problems, **report})
    return report
