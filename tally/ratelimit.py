"""Per-key token buckets. Pure: the clock is injected, so tests are deterministic."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass
class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full."""

    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> "TokenBucket":
        return cls(rate=rate, burst=burst, tokens=burst, updated=now)

    def try_take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens if there are enough and return 0; else return seconds to wait."""
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


class KeyedRateLimiter:
    """One token bucket per key (an API key id), bounded in memory by evicting the idlest."""

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic, max_keys: int = 10_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def try_acquire(self, key: str) -> float:
        """0 when ``key`` may proceed now, else the seconds after which it may retry."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket.full(self.rate, self.burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                # An evicted key comes back with a full bucket: at worst one extra burst.
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.try_take(now)
