"""`resource://config/environment`: the daemon's effective settings, with every secret redacted.

Owns the redaction rule: a setting or environment variable whose name says it holds a secret (token,
secret, password, API key, private key, credentials) shows only whether it is set, and credentials
inside URL values (`https://user:pw@host`, `?token=…`) are masked wherever they appear. Does not
resolve settings (shared/config.py does) and never shows the daemon's whole environment: only the
variables its settings read, plus the names (never values) of LLM provider keys that are set.
"""

from __future__ import annotations

import itertools
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from shared.config import Settings
from shared.paths import MailboxPaths

REDACTED = "<redacted>"
# A name is secret when one of its words (split on `_`, `-`, `.`) is one of these, or two adjacent words
# are (`api_key`, `private_key`): `http_bearer_token` is, `llm_max_tokens` is not.
_SECRET_WORDS = frozenset({"token", "secret", "password", "passwd", "pwd", "passphrase", "apikey", "credential",
                           "credentials", "jwt", "cookie", "signature", "sig", "key"})
_SECRET_PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key"),
                           ("auth", "key"), ("session", "key"), ("signing", "key")})
_NOT_SECRET = frozenset({"http_jwt_enabled", "http_jwt_algorithms", "http_jwt_jwks_file", "http_jwt_jwks_url",
                         "http_jwt_audience", "http_jwt_issuer", "http_jwt_role_claim", "http_jwt_agent_claim",
                         "http_jwt_leeway_seconds", "llm_input_token_budget"})
# Provider keys litellm reads (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...): shown as "set", never their value.
_PROVIDER_KEY = re.compile(r"^[A-Z0-9_]+_(API_KEY|API_TOKEN|SECRET_KEY|ACCESS_KEY)$")
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s,;]+")


def secret_name(name: str) -> bool:
    """Whether a setting, environment variable or query parameter name says its value is a secret."""
    lowered = name.lower()
    if lowered in _NOT_SECRET or lowered.removeprefix("http_") in _NOT_SECRET:
        return False
    words = [w for w in re.split(r"[_\-.]+", lowered) if w]
    return any(w in _SECRET_WORDS for w in words) or any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


def _mask_url(found: re.Match[str]) -> str:
    url = found.group(0)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{k}={REDACTED if secret_name(k) else v}" for k, v in pairs)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(name: str, value: Any) -> Any:
    """`value` as it may be shown: secrets by name become REDACTED (or "" when unset); URL credentials are masked."""
    if secret_name(name):
        return REDACTED if value not in ("", None) else value
    if isinstance(value, str) and "://" in value:
        return _URL.sub(_mask_url, value)
    return value


def describe(settings: Settings, paths: MailboxPaths, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The config/environment resource's body."""
    env = os.environ if environ is None else environ
    shown: dict[str, Any] = {}
    redacted: list[str] = []
    variables: dict[str, Any] = {}
    for spec in fields(Settings):
        value = getattr(settings, spec.name)
        shown[spec.name] = redact(spec.name, value)
        if shown[spec.name] != value:
            redacted.append(spec.name)
        for env_name in spec.metadata.get("env", ()):
            if env.get(env_name, "") != "":
                variables[env_name] = redact(env_name, env[env_name]) if not secret_name(spec.name) else REDACTED
    providers = sorted(name for name in env if _PROVIDER_KEY.match(name) and env[name])
    return {
        "root": str(paths.root),
        "state_dir": str(paths.state_dir),
        "database": str(paths.db),
        "socket": str(paths.socket),
        "config_file": str(paths.config_file),
        "http": {"enabled": settings.http_enabled, "host": settings.http_host, "port": settings.http_port,
                 "path": settings.http_path},
        "settings": shown,
        "environment_variables": variables,
        "provider_keys_set": providers,
        "redacted": sorted(redacted),
    }
