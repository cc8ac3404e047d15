"""One-time login secrets for the web mailbox, shared by `mailctl web` (creates) and maild (redeems).

A secret is registered as an empty 0600 file named by its sha256 under `.mcp_mail/web-logins/`
(0700): only the mailbox's OS user can create one, the secret itself is never stored, and the
daemon consumes it by unlinking the file (exactly one visit wins). Stdlib only: mailctl imports it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path


def login_dir(state_dir: Path) -> Path:
    return state_dir / "web-logins"


def secret_file(state_dir: Path, secret: str) -> Path:
    return login_dir(state_dir) / hashlib.sha256(secret.encode()).hexdigest()


def create_login_secret(state_dir: Path) -> str:
    """A fresh one-time secret, registered for the daemon to redeem."""
    folder = login_dir(state_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    fd = os.open(secret_file(state_dir, secret), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    return secret
