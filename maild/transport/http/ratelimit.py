"""Token buckets per (kind, name, identity): in memory by default, or in Redis for several bridges.

Rates are per minute with a burst (0 = burst equals the per-minute rate). The memory backend
evicts buckets that have refilled completely (an idle bucket carries no state worth keeping), so
memory stays bounded by the number of recently active keys. The Redis backend runs the same
bucket as one Lua script (atomic across bridges), through the sync client in a worker thread:
redis' asyncio client does not run under trio.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import anyio

MAX_BUCKETS = 100_000

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


@dataclass
class Limit:
    per_minute: int
    burst: int

    @property
    def rate(self) -> float:
        return self.per_minute / 60.0

    @property
    def capacity(self) -> float:
        return float(self.burst or self.per_minute)


def retry_after(limit: Limit, tokens: float) -> int:
    return max(1, math.ceil((1 - tokens) / limit.rate))


class MemoryLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    async def take(self, key: str, limit: Limit) -> tuple[bool, int]:
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (limit.capacity, now))
        tokens = min(limit.capacity, tokens + (now - last) * limit.rate)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > MAX_BUCKETS:
            self.evict(limit)
        return allowed, 0 if allowed else retry_after(limit, tokens)

    def evict(self, limit: Limit) -> None:
        now = time.monotonic()
        full_after = limit.capacity / limit.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}

    def __len__(self) -> int:
        return len(self._buckets)


class RedisLimiter:
    def __init__(self, url: str) -> None:
        import redis

        self._client: Any = redis.Redis.from_url(url)
        self._script = self._client.register_script(_LUA)

    async def take(self, key: str, limit: Limit) -> tuple[bool, int]:
        def run() -> Any:
            return self._script(keys=[f"agent-mail:rl:{key}"], args=[limit.rate, limit.capacity, time.time()])

        allowed, tokens = await anyio.to_thread.run_sync(run)
        return bool(allowed), 0 if allowed else retry_after(limit, float(tokens))
