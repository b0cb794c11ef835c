"""Token buckets per key, on an injected clock."""

from __future__ import annotations

import pytest

from tally.ratelimit import KeyedRateLimiter, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestTokenBucket:
    def test_a_full_bucket_allows_its_burst_then_says_how_long_to_wait(self):
        bucket = TokenBucket.full(rate=2.0, burst=3, now=0.0)
        assert [bucket.try_take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
        assert bucket.try_take(0.0) == pytest.approx(0.5)

    def test_tokens_come_back_at_the_rate_but_never_beyond_the_burst(self):
        bucket = TokenBucket.full(rate=2.0, burst=3, now=0.0)
        for _ in range(3):
            bucket.try_take(0.0)
        assert bucket.try_take(0.5) == 0.0
        assert bucket.try_take(0.5) == pytest.approx(0.5)
        assert bucket.try_take(1000.0) == 0.0
        assert bucket.tokens == pytest.approx(2.0)

    def test_a_refused_request_takes_no_tokens(self):
        bucket = TokenBucket.full(rate=1.0, burst=1, now=0.0)
        assert bucket.try_take(0.0) == 0.0
        assert bucket.try_take(0.5) == pytest.approx(0.5)
        assert bucket.try_take(0.5) == pytest.approx(0.5)
        assert bucket.try_take(1.0) == 0.0


class TestKeyedRateLimiter:
    def test_each_key_has_its_own_bucket(self):
        clock = FakeClock()
        limiter = KeyedRateLimiter(rate=1.0, burst=2, clock=clock)
        assert [limiter.try_acquire("a") for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]
        assert limiter.try_acquire("b") == 0.0
        clock.now += 1.0
        assert limiter.try_acquire("a") == 0.0

    def test_memory_is_bounded_by_evicting_the_least_recently_seen_key(self):
        clock = FakeClock()
        limiter = KeyedRateLimiter(rate=1.0, burst=1, clock=clock, max_keys=2)
        limiter.try_acquire("a")
        limiter.try_acquire("b")
        limiter.try_acquire("c")
        assert limiter.try_acquire("b") == pytest.approx(1.0)
        # "a" was evicted, so it comes back with a full bucket.
        assert limiter.try_acquire("a") == 0.0

    @pytest.mark.parametrize("rate, burst", [(0, 1), (-1, 5), (1, 0)])
    def test_nonsense_settings_are_rejected(self, rate, burst):
        with pytest.raises(ValueError):
            KeyedRateLimiter(rate=rate, burst=burst)
