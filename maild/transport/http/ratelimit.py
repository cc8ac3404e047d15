"""Token buckets per (kind, name, identity): in memory by default, or in Redis for several bridges.

Rates are per minute with a burst (0 = the per-minute rate); a rate of 0 or less means unlimited,
as upstream. The memory backend forgets a bucket once it has refilled completely (by *its own*
refill time: such a bucket is indistinguishable from a new one), sweeps for those every minute and
whenever the number of buckets passes a cap, and above the cap drops the least recently used, so
memory stays bounded. The Redis backend runs the same bucket as one Lua script (atomic across
bridges) through the sync client in a worker thread (redis' asyncio client does not run under
trio). When Redis cannot be reached it falls back to this bridge's memory buckets (upstream's
choice: limits still hold per bridge) with one logged warning per outage, retrying Redis every
few seconds.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

log = logging.getLogger(__name__)
MAX_BUCKETS = 100_000
SWEEP_INTERVAL_SECONDS = 60.0
REDIS_RETRY_SECONDS = 5.0

_LUA = """
local tokens_key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', tokens_key, 't', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate)
local allowed = 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 end
redis.call('HSET', tokens_key, 't', tokens, 'ts', now)
redis.call('EXPIRE', tokens_key, math.ceil(burst / rate) + 1)
return {allowed, tostring(tokens)}
"""


class RedisMissing(RuntimeError):
    """The Redis backend was chosen but the `redis` package (the `[redis]` extra) is not installed."""


@dataclass(frozen=True)
class Limit:
    per_minute: int
    burst: int

    @property
    def unlimited(self) -> bool:
        return self.per_minute <= 0

    @property
    def rate(self) -> float:
        """Tokens per second (only meaningful when not unlimited)."""
        return self.per_minute / 60.0

    @property
    def capacity(self) -> float:
        return float(self.burst if self.burst > 0 else max(1, self.per_minute))

    @property
    def full_after(self) -> float:
        """Seconds an empty bucket takes to refill completely."""
        return self.capacity / self.rate


def retry_after(limit: Limit, tokens: float) -> int:
    return max(1, math.ceil((1 - tokens) / limit.rate))


class MemoryLimiter:
    def __init__(self, max_buckets: int = MAX_BUCKETS, clock: Callable[[], float] = time.monotonic) -> None:
        # key -> (tokens, last update, seconds to refill completely); dict order = least recently used first
        self._buckets: dict[str, tuple[float, float, float]] = {}
        self._max = max(1, max_buckets)
        self._clock = clock
        self._last_sweep = clock()
        self.evicted = 0

    async def take(self, key: str, limit: Limit) -> tuple[bool, int]:
        return self.take_now(key, limit)

    def take_now(self, key: str, limit: Limit) -> tuple[bool, int]:
        if limit.unlimited:
            return True, 0
        now = self._clock()
        state = self._buckets.pop(key, None)  # re-inserted below: moves the key to the recent end
        tokens = limit.capacity if state is None else min(limit.capacity, state[0] + (now - state[1]) * limit.rate)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        self._buckets[key] = (tokens, now, limit.full_after)
        if len(self._buckets) > self._max or now - self._last_sweep >= SWEEP_INTERVAL_SECONDS:
            self.evict(now)
        return allowed, 0 if allowed else retry_after(limit, tokens)

    def evict(self, now: float | None = None) -> None:
        """Forget refilled buckets; if still over the cap, the least recently used (down to 90 %)."""
        now = self._clock() if now is None else now
        self._last_sweep = now
        before = len(self._buckets)
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < v[2]}
        if len(self._buckets) > self._max:
            # Every bucket is still refilling: drop the oldest. They start again full, the price of a bound.
            keep = max(1, int(self._max * 0.9))
            for key in list(self._buckets)[: len(self._buckets) - keep]:
                del self._buckets[key]
        self.evicted += before - len(self._buckets)

    def statistics(self) -> dict[str, Any]:
        return {"backend": "memory", "buckets": len(self._buckets), "max_buckets": self._max,
                "evicted": self.evicted}

    def __len__(self) -> int:
        return len(self._buckets)


class RedisLimiter:
    def __init__(self, url: str, fallback: MemoryLimiter) -> None:
        try:
            import redis
        except ImportError:
            raise RedisMissing(
                "HTTP_RATE_LIMIT_BACKEND=redis needs the redis package: pip install 'agent-mail[redis]' "
                "(or use the memory backend)"
            ) from None
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No client-side retries and short timeouts: a dead Redis must not stall requests.
        self._client: Any = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0,
                                                 retry=Retry(NoBackoff(), 0))
        self._script = self._client.register_script(_LUA)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._fallback = fallback
        self._down_until = 0.0
        self._down = False

    async def take(self, key: str, limit: Limit) -> tuple[bool, int]:
        if limit.unlimited:
            return True, 0
        if self._down and time.monotonic() < self._down_until:
            return self._fallback.take_now(key, limit)

        def run() -> Any:
            return self._script(keys=[f"agent-mail:rl:{key}"], args=[limit.rate, limit.capacity, time.time()])

        try:
            allowed, tokens = await anyio.to_thread.run_sync(run)
        except self._errors as exc:
            if not self._down:
                log.warning("Redis rate-limit backend unreachable (%s); limiting per bridge in memory and "
                            "retrying Redis every %.0f s", exc, REDIS_RETRY_SECONDS)
            self._down, self._down_until = True, time.monotonic() + REDIS_RETRY_SECONDS
            return self._fallback.take_now(key, limit)
        if self._down:
            log.warning("Redis rate-limit backend reachable again; limits are shared again")
            self._down = False
        return bool(allowed), 0 if allowed else retry_after(limit, float(tokens))

    def statistics(self) -> dict[str, Any]:
        return {"backend": "redis", "redis_ok": not self._down, "fallback": self._fallback.statistics()}
