"""Token buckets per principal, client and tool: in-process by default, shared through Redis.

The bucket arithmetic is one pure function; the in-process and Redis stores apply it (Redis
atomically, in a Lua script, so several replicas share one budget).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = ["BucketStore", "LocalBuckets", "RateLimit", "RedisBuckets", "take"]

Key = Literal["principal", "client", "tool", "principal+tool"]


@dataclass(frozen=True)
class RateLimit:
    key: Key
    per_minute: float
    burst: int

    @property
    def rate(self) -> float:
        return self.per_minute / 60.0


def take(tokens: float, last: float, now: float, limit: RateLimit) -> tuple[bool, float, float]:
    """(allowed, tokens left, seconds until one token is back) after asking for one token."""
    tokens = min(float(limit.burst), tokens + max(0.0, now - last) * limit.rate)
    if tokens >= 1.0:
        return True, tokens - 1.0, 0.0
    return False, tokens, (1.0 - tokens) / limit.rate if limit.rate > 0 else math.inf


class BucketStore(Protocol):
    async def take(self, bucket: str, limit: RateLimit) -> tuple[bool, float]:
        """(allowed, retry after seconds)."""
        ...


class LocalBuckets:
    def __init__(self, max_buckets: int = 100_000) -> None:
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def take(self, bucket: str, limit: RateLimit) -> tuple[bool, float]:
        now = time.monotonic()
        tokens, last = self._buckets.get(bucket, (float(limit.burst), now))
        allowed, left, retry = take(tokens, last, now, limit)
        self._buckets[bucket] = (left, now)
        self._buckets.move_to_end(bucket)
        if len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)
        return allowed, retry


# The same arithmetic as ``take``, atomically in Redis; time from the Redis server's clock so
# replicas with skewed clocks still share one bucket fairly.
_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local allowed = 0
local retry = 0
if tokens >= 1 then
  allowed = 1
  tokens = tokens - 1
else
  retry = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'last', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return {allowed, tostring(retry)}
"""


class RedisBuckets:
    """Buckets shared by every replica through Redis."""

    def __init__(self, client: Any, prefix: str = "bastion:rl:") -> None:
        self.client = client
        self.prefix = prefix
        self._script = client.register_script(_LUA)

    async def take(self, bucket: str, limit: RateLimit) -> tuple[bool, float]:
        allowed, retry = await self._script(keys=[self.prefix + bucket],
                                            args=[limit.rate, limit.burst])
        return bool(int(allowed)), float(retry)
