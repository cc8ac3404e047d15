"""Scrub presets for a share bundle: which secrets are redacted and what each preset drops.

`standard` redacts secrets in subjects, bodies and attachment metadata and drops the attachment keys
that carry credentials; `strict` also replaces every body and drops attachments; `archive` is
lossless (disaster-recovery saves). Pure functions on values: the SQL lives in store/snapshot.py.
"""

from __future__ import annotations

import re
from typing import Any

from shared.errors import InvalidArgument

PRESETS = ("standard", "strict", "archive")
REDACTED = "[REDACTED]"
BODY_REDACTED = "[Message body redacted]"
# Attachment keys that can carry credentials (signed URLs, auth headers): dropped, not redacted.
DROPPED_KEYS = frozenset({"download_url", "headers", "authorization", "signed_url", "bearer_token"})

# The reference's patterns, plus AWS keys and PEM private keys. Order matters: the PEM block first,
# so its base64 lines are not half-matched by a shorter pattern.
SECRET_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)",
               re.DOTALL),
    re.compile(r"\bghp_[A-Za-z0-9]{36,}"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bxox[baprs]-[A-Za-z0-9-]{10,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}"),
    re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"),
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
)
# `.env`-style assignments whose name says secret: keep the name, redact the value.
ENV_LINE = re.compile(
    r"(?im)^(\s*(?:export\s+)?[A-Z0-9_]*(?:SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIALS?)"
    r"[A-Z0-9_]*\s*=\s*)(?!\[REDACTED\])(\S.*)$")

# Every pattern above needs one of these (lower-cased) words: a text without any skips the ~9 regex
# passes of `redact` (substring tests are ~6x cheaper; most mail has no secret). Only for ASCII text:
# under re.IGNORECASE the long s (U+017F) matches "s" and the Kelvin sign "k", which lower() would not give.
HINTS = ("private key", "private_key", "ghp_", "github_pat_", "xox", "sk-", "bearer", "eyj", "akia", "asia",
         "secret", "token", "passw", "api_key", "access_key", "credential")


def check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise InvalidArgument(f"unknown scrub preset {preset!r}; use one of: {', '.join(PRESETS)}")
    return preset


def redact(text: str) -> tuple[str, int]:
    """Text with every secret replaced by [REDACTED], and how many were replaced."""
    if text.isascii():
        lowered = text.lower()
        if not any(hint in lowered for hint in HINTS):
            return text, 0
    count = 0
    for pattern in SECRET_PATTERNS:
        text, n = pattern.subn(REDACTED, text)
        count += n
    text, n = ENV_LINE.subn(lambda m: m.group(1) + REDACTED, text)
    return text, count + n


def redact_value(value: Any) -> tuple[Any, int]:
    """Redact strings anywhere inside JSON-like metadata; drop credential-bearing keys."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        total, out = 0, []
        for item in value:
            clean, n = redact_value(item)
            out.append(clean)
            total += n
        return out, total
    if isinstance(value, dict):
        total, kept = 0, {}
        for key, item in value.items():
            if key in DROPPED_KEYS:
                total += 1
                continue
            kept[key], n = redact_value(item)
            total += n
        return kept, total
    return value, 0


def scrub_message(preset: str, subject: str, body: str, attachments: list[dict[str, Any]]
                  ) -> tuple[str, str, list[dict[str, Any]], int]:
    """One message under a preset: (subject, body, attachments, secrets redacted)."""
    if preset == "archive":
        return subject, body, attachments, 0
    subject, n_subject = redact(subject)
    if preset == "strict":
        return subject, BODY_REDACTED, [], n_subject
    body, n_body = redact(body)
    kept, n_meta = redact_value(attachments)
    return subject, body, kept, n_subject + n_body + n_meta
