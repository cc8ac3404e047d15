"""Public keys for JWT verification by `kid`, from a JWKS file (read once) or a JWKS URL (cached).

The URL is fetched in a worker thread (never on the event loop), at most once at a time, again
after `ttl` seconds, and early only when a token names an unknown `kid` — at most once every
`min_refetch` seconds, so a stream of tokens with made-up `kid`s cannot turn into a stream of
fetches. A failed fetch keeps the keys we had. Each key remembers its type, so a key is only ever
used with an algorithm of its own family (an RSA key can never verify an HMAC token).
"""

from __future__ import annotations

import json
import logging
import math
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import jwt

log = logging.getLogger(__name__)
FETCH_TIMEOUT_SECONDS = 5.0
TTL_SECONDS = 300.0
MIN_REFETCH_SECONDS = 30.0
_FAMILY = {"HS": "oct", "RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class UnknownKey(Exception):
    """No usable key for this token: answered with the same bare 401 as every other failure."""


def parse(document: dict[str, Any]) -> dict[str | None, jwt.PyJWK]:
    keys: dict[str | None, jwt.PyJWK] = {}
    for entry in document.get("keys", []):
        try:
            keys[entry.get("kid")] = jwt.PyJWK.from_dict(entry)
        except (jwt.PyJWTError, KeyError, ValueError, TypeError) as exc:
            log.warning("skipping a JWKS key that cannot be used (kid %r): %s", entry.get("kid"), exc)
    return keys


class Jwks:
    def __init__(self, *, file: str = "", url: str = "", ttl: float = TTL_SECONDS,
                 min_refetch: float = MIN_REFETCH_SECONDS) -> None:
        self._url = url
        self._ttl = ttl
        self._min_refetch = min_refetch
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at = -math.inf
        self._lock = anyio.Lock()
        self.fetches = 0
        if file:
            self._keys = parse(json.loads(Path(file).read_text()))

    @property
    def configured(self) -> bool:
        return bool(self._url or self._keys)

    async def key_for(self, kid: str | None, algorithm: str) -> Any:
        if self._url:
            age = time.monotonic() - self._fetched_at
            if age >= self._ttl or (kid not in self._keys and age >= self._min_refetch):
                await self._refresh(self._fetched_at)
        if kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))  # a single key needs no kid (upstream: the first key)
        elif kid in self._keys:
            key = self._keys[kid]
        else:
            raise UnknownKey(kid)
        if _FAMILY.get(algorithm[:2]) != key.key_type:
            raise UnknownKey(f"{kid}: a {key.key_type} key cannot verify {algorithm}")
        return key.key

    async def _refresh(self, seen: float) -> None:
        async with self._lock:
            if self._fetched_at != seen:
                return  # another request fetched while we waited
            try:
                document = await anyio.to_thread.run_sync(self._fetch)
                self._keys = parse(document)
            except (OSError, ValueError) as exc:
                log.warning("cannot fetch the JWKS from %s (keeping %d cached keys): %s",
                            self._url, len(self._keys), exc)
            self.fetches += 1
            self._fetched_at = time.monotonic()

    def _fetch(self) -> dict[str, Any]:
        request = urllib.request.Request(self._url, headers={"Accept": "application/json"})  # noqa: S310 - operator's URL
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS) as response:  # noqa: S310 - operator's URL
            document: dict[str, Any] = json.loads(response.read())
        return document
