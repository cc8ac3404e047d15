"""Who is calling over HTTP: static bearer token, JWT (HS/RS/ES, secret or JWKS), or trusted localhost.

Every failure is the same 401 with no detail (what was wrong stays in the debug log): `alg=none`,
algorithm confusion (an RSA public key offered as an HMAC secret), unknown `kid`, expiry,
not-yet-valid, wrong audience or issuer, malformed tokens. Localhost is trusted only when
explicitly enabled, and never when a forwarding header shows a proxy in between.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from shared.config import Settings, csv

log = logging.getLogger(__name__)
FORWARDING_HEADERS = (b"x-forwarded-for", b"forwarded", b"x-real-ip", b"x-forwarded-host")
ASYMMETRIC = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512")


class Unauthorized(Exception):
    """Answered with a bare 401."""


@dataclass(frozen=True)
class Identity:
    subject: str
    role: str
    agent: str | None = None


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._bearer = settings.http_bearer_token
        self._algorithms = [a for a in csv(settings.http_jwt_algorithms) if a.lower() != "none"]
        self._jwks_client: jwt.PyJWKClient | None = None
        self._jwks_keys: dict[str, Any] = {}
        if settings.http_jwt_jwks_file:
            data = json.loads(Path(settings.http_jwt_jwks_file).read_text())
            for key in data.get("keys", []):
                self._jwks_keys[key.get("kid", "")] = jwt.PyJWK.from_dict(key).key
        if settings.http_jwt_jwks_url:
            self._jwks_client = jwt.PyJWKClient(settings.http_jwt_jwks_url, cache_keys=True, lifespan=300)

    @property
    def enabled(self) -> bool:
        return bool(self._bearer) or self._settings.http_jwt_enabled

    def authenticate(self, headers: dict[bytes, bytes], client_host: str | None) -> Identity:
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token:
            if self._bearer and hmac.compare_digest(token.encode(), self._bearer.encode()):
                return Identity(subject="bearer", role="writer")
            if self._settings.http_jwt_enabled:
                return self._from_jwt(token.strip())
            raise Unauthorized
        if (
            self._settings.http_allow_localhost_unauthenticated
            and client_host in ("127.0.0.1", "::1", "localhost")
            and not any(name in headers for name in FORWARDING_HEADERS)
        ):
            return Identity(subject="localhost", role="writer")
        if not self.enabled and not self._settings.http_allow_localhost_unauthenticated:
            raise Unauthorized  # no credential configured at all: nothing may pass
        raise Unauthorized

    def _key_for(self, token: str, header: dict[str, Any]) -> Any:
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise Unauthorized
        kid = header.get("kid")
        if self._jwks_keys:
            if kid not in self._jwks_keys:
                raise Unauthorized
            return self._jwks_keys[kid]
        if self._jwks_client is not None:
            try:
                return self._jwks_client.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientError:
                raise Unauthorized from None
        if algorithm in ASYMMETRIC or not self._settings.http_jwt_secret:
            raise Unauthorized  # an asymmetric token needs a public key, never the HMAC secret
        return self._settings.http_jwt_secret

    def _from_jwt(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
            key = self._key_for(token, header)
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[header["alg"]],
                audience=self._settings.http_jwt_audience or None,
                issuer=self._settings.http_jwt_issuer or None,
                leeway=self._settings.http_jwt_leeway_seconds,
                options={"require": ["exp", "sub"], "verify_aud": bool(self._settings.http_jwt_audience)},
            )
        except (jwt.PyJWTError, KeyError, ValueError, TypeError) as exc:
            log.debug("JWT refused: %s", exc)
            raise Unauthorized from None
        role = claims.get(self._settings.http_jwt_role_claim)
        roles = role if isinstance(role, list) else [role] if isinstance(role, str) else []
        writer = set(csv(self._settings.http_rbac_writer_roles))
        reader = set(csv(self._settings.http_rbac_reader_roles))
        if any(r in writer for r in roles):
            resolved = "writer"
        elif any(r in reader for r in roles):
            resolved = "reader"
        else:
            resolved = "writer" if self._settings.http_rbac_default_role in writer else "reader"
        agent = claims.get(self._settings.http_jwt_agent_claim)
        return Identity(subject=str(claims["sub"]), role=resolved, agent=agent if isinstance(agent, str) else None)
