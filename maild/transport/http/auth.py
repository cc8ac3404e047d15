"""Who is calling over HTTP: static bearer token, JWT (HS/RS/ES, secret or JWKS), or trusted localhost.

Every failure is the same 401 with no detail (what was wrong stays in the debug log): `alg=none`,
algorithm confusion (an RSA public key offered as an HMAC secret), unknown `kid`, expiry,
not-yet-valid, wrong audience or issuer, malformed tokens. Localhost is trusted only when
explicitly enabled, and never when a forwarding header shows a proxy in between. A verified token
is remembered (until it expires, at most a minute) so a client reusing it is not re-verified on
every request; failures are never remembered. Revoked JWTs (by `jti` or `agent` claim) are refused
on every request, cached or not.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt

from maild.transport.http.jwks import Jwks, UnknownKey
from shared.config import Settings, csv

log = logging.getLogger(__name__)
FORWARDING_HEADERS = (b"x-forwarded-for", b"x-forwarded-proto", b"forwarded", b"x-real-ip", b"x-forwarded-host")
ASYMMETRIC = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA")
VERIFIED_CACHE_SIZE = 10_000
VERIFIED_CACHE_SECONDS = 60.0


class Unauthorized(Exception):
    """Answered with a bare 401."""


@dataclass(frozen=True)
class Identity:
    # Namespaced by how the caller proved it: `bearer`, `localhost` or `jwt:<iss>:<sub>`. Sessions and
    # rate-limit buckets are keyed by it, so a JWT whose `sub` is "bearer" is not the admin token.
    subject: str
    role: str
    agent: str | None = None
    jti: str | None = None


Revoked = Callable[[str | None, str | None], bool]  # (jti, agent) -> refused?


class Authenticator:
    def __init__(self, settings: Settings, revoked: Revoked | None = None) -> None:
        self._settings = settings
        self._revoked = revoked
        self._bearer = settings.http_bearer_token.encode()
        self._algorithms = [a for a in csv(settings.http_jwt_algorithms) if a.lower() != "none"]
        self._jwks = Jwks(file=settings.http_jwt_jwks_file, url=settings.http_jwt_jwks_url)
        self._writer_roles = set(csv(settings.http_rbac_writer_roles))
        self._reader_roles = set(csv(settings.http_rbac_reader_roles))
        self._verified: dict[str, tuple[Identity, float]] = {}  # token -> (identity, valid until, wall clock)

    @property
    def jwks(self) -> Jwks:
        return self._jwks

    async def authenticate(self, headers: dict[bytes, bytes], client_host: str | None) -> Identity:
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            if self._bearer and hmac.compare_digest(token.encode(), self._bearer):
                return Identity(subject="bearer", role="writer")
            if self._settings.http_jwt_enabled:
                cached = self._verified.get(token)
                identity = cached[0] if cached is not None and time.time() < cached[1] else await self._from_jwt(token)
                if self._revoked is not None and self._revoked(identity.jti, identity.agent):
                    log.debug("JWT refused: revoked (jti %s, agent %s)", identity.jti, identity.agent)
                    raise Unauthorized  # checked on every request: the verified cache does not outlive it
                return identity
            raise Unauthorized
        if (
            self._settings.http_allow_localhost_unauthenticated
            and client_host in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "localhost")
            and not any(name in headers for name in FORWARDING_HEADERS)
        ):
            return Identity(subject="localhost", role="writer")
        raise Unauthorized

    async def _from_jwt(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            if algorithm not in self._algorithms:
                raise Unauthorized  # noqa: TRY301 - one refusal path for every failure
            if self._jwks.configured:
                key = await self._jwks.key_for(header.get("kid"), algorithm)
            elif algorithm in ASYMMETRIC or not self._settings.http_jwt_secret:
                raise Unauthorized  # noqa: TRY301 - an asymmetric token needs a public key, never the HMAC secret
            else:
                key = self._settings.http_jwt_secret
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self._settings.http_jwt_audience or None,
                issuer=self._settings.http_jwt_issuer or None,
                leeway=self._settings.http_jwt_leeway_seconds,
                options={"require": ["exp", "sub"], "verify_aud": bool(self._settings.http_jwt_audience)},
            )
        except Unauthorized:
            log.debug("JWT refused: algorithm not allowed or no key for it")
            raise
        except (jwt.PyJWTError, UnknownKey, KeyError, ValueError, TypeError) as exc:
            log.debug("JWT refused: %s", exc)
            raise Unauthorized from None
        identity = self._identity(claims)
        try:
            expires = float(claims["exp"]) + self._settings.http_jwt_leeway_seconds
        except (TypeError, ValueError):
            return identity
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()  # rare: a bound, not a policy
        self._verified[token] = (identity, min(expires, time.time() + VERIFIED_CACHE_SECONDS))
        return identity

    def _identity(self, claims: dict[str, object]) -> Identity:
        role = claims.get(self._settings.http_jwt_role_claim)
        roles = role if isinstance(role, list) else role.split() if isinstance(role, str) else []
        if any(r in self._writer_roles for r in roles):
            resolved = "writer"
        elif any(r in self._reader_roles for r in roles):
            resolved = "reader"
        else:
            resolved = "writer" if self._settings.http_rbac_default_role in self._writer_roles else "reader"
        agent = claims.get(self._settings.http_jwt_agent_claim)
        issuer = claims.get("iss")
        subject = f"jwt:{issuer if isinstance(issuer, str) else ''}:{claims['sub']}"
        jti = claims.get("jti")
        return Identity(subject=subject, role=resolved, agent=agent if isinstance(agent, str) else None,
                        jti=jti if isinstance(jti, str) else None)
