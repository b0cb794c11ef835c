"""Property-based fuzzing of every RPC of the four services, as real processes on real Postgres.

Requests are built by hypothesis from the proto descriptors (tests/fuzz/strategies.py), aimed
at real objects (tests/fuzz/world.py), and cover every method found in tally_gen/ in a seeded
rotation. Properties, per call: never UNKNOWN or INTERNAL, never an unintended
RESOURCE_EXHAUSTED, every INVALID_ARGUMENT names a field, every call answers within its
deadline. After every batch of calls: all four services alive and SERVING, the meter's
applier not stalled, and a new canary event (sent twice with one key) metered exactly once
and priced on the canary subscription's upcoming invoice.

`make test` runs a short seeded run; `make soak` a long one (TALLY_FUZZ_EXAMPLES calls,
TALLY_FUZZ_SEED). Every distinct finding is listed in the failure and written to
.tally/fuzz/<run>.json.
"""

from __future__ import annotations

import pytest

from tests.fuzz.runner import assert_clean, env_int, run_fuzz

pytestmark = pytest.mark.e2e


class TestEveryRpcSurvivesHostileInput:
    def test_a_short_seeded_run_over_every_rpc_finds_nothing_and_the_canary_is_counted_once(self, fuzz_cluster):
        stats = run_fuzz(fuzz_cluster, "short", env_int("TALLY_FUZZ_SHORT_EXAMPLES", 580), env_int("TALLY_FUZZ_SEED", 12))
        assert_clean(stats)

    @pytest.mark.slow
    def test_a_long_run_over_every_rpc_finds_nothing_and_the_canary_is_counted_once(self, fuzz_cluster):
        stats = run_fuzz(fuzz_cluster, "soak", env_int("TALLY_FUZZ_EXAMPLES", 5000), env_int("TALLY_FUZZ_SEED", 1012))
        assert_clean(stats)
