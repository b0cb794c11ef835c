"""One fuzz run: seed a world and a canary, call every RPC with hypothesis-built requests, judge.

Used by tests/fuzz/test_fuzz_every_rpc.py (make test, make soak) and tests/fuzz/explore.py.
"""

from __future__ import annotations

import json
import os
import random
import time
from datetime import datetime, timezone

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.fuzz.engine import Finding, Stats, call, request_json
from tests.fuzz.rpcs import all_rpcs
from tests.fuzz.strategies import SWEEP_EDGES, fields_of_kind, requests, swept_requests
from tests.fuzz.world import Canary, Channels, billing_problems, seed_world
from tests.harness import REPO

# Figures of the runs in this process, printed in pytest's terminal summary.
RUNS: list[dict] = []
UTC = timezone.utc
CALLS_PER_BATCH = 10
# Each round calls every RPC this many times (one hypothesis run per RPC and round).
EXAMPLES_PER_RPC_PER_ROUND = 5
# Sweeps cover the first this-many Timestamp, Decimal and Struct fields of each request.
SWEEP_FIELDS_PER_KIND = 3


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def run_fuzz(cluster, name: str, examples: int, fuzz_seed: int) -> Stats:
    rpcs = all_rpcs()
    order = list(rpcs)
    random.Random(fuzz_seed).shuffle(order)
    ch = Channels({service: cluster.address(service) for service in cluster.ports})
    now = datetime.now(UTC)
    pools = seed_world(ch, now)
    canary = Canary.create(ch, now)
    pools.reserved |= canary.reserved()
    stats = Stats()
    problems = canary.check(ch, cluster)
    assert not problems, f"the canary fails before any fuzz case: {problems}"
    stats.canaries_ok += 1
    recent: list[tuple[str, str]] = []
    state = {"broken": False, "swept": False}
    started = time.monotonic()

    def after_batch() -> None:
        stats.batches += 1
        problems = canary.check(ch, cluster)
        if problems:
            state["broken"] = True
            stats.record(Finding(
                "(after batch)", "system", "-", "; ".join(problems),
                json.dumps([{"rpc": r, "request": json.loads(q)} for r, q in recent]),
            ))
        else:
            stats.canaries_ok += 1
            for problem in billing_problems(ch, pools):
                stats.record(Finding(
                    "(after batch)", "billing", "-", problem,
                    json.dumps([{"rpc": r, "request": json.loads(q)} for r, q in recent]),
                ))
        recent.clear()

    def fuzz_one_rpc(rpc, rpc_seed: int, count: int, strategy=None) -> None:
        # One hypothesis run per RPC and round: the method is fixed for the run, so every
        # draw depends only on earlier draws (hypothesis checks that), while the rounds
        # interleave all methods and the canary runs after every CALLS_PER_BATCH calls.
        @seed(rpc_seed)
        @settings(
            max_examples=count, database=None, deadline=None, phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(data=st.data())
        def case(data) -> None:
            # Draw first, decide after: the draws must not depend on the run's state.
            if strategy is not None:
                drawn = [data.draw(strategy, label=rpc.name)]
            else:
                messages_count = data.draw(st.integers(1, 3), label="stream messages") if rpc.client_streaming else 1
                drawn = [data.draw(requests(rpc.method.input_type, pools), label=rpc.name) for _ in range(messages_count)]
            if state["broken"]:
                return  # one tenant's poison stopped everyone: the batch is recorded; nothing after it says more
            if strategy is not None:
                # A sweep: the first request that holds the swept field is called, once.
                if state["swept"] or not drawn[0][1]:
                    return
                state["swept"] = True
            messages = [message for message, _ in drawn]
            stats.cases += 1
            stats.hostile_calls += any(hostile for _, hostile in drawn)
            recent.append((rpc.name, request_json(messages)))
            call(ch, rpc, messages, pools, stats)
            if stats.cases % CALLS_PER_BATCH == 0:
                after_batch()

        case()

    per_round = len(order) * EXAMPLES_PER_RPC_PER_ROUND
    rounds = max(1, -(-examples // per_round))
    try:
        for round_number in range(rounds):
            for index, rpc in enumerate(order):
                if state["broken"]:
                    break
                fuzz_one_rpc(rpc, fuzz_seed * 100_003 + round_number * 1_000 + index, EXAMPLES_PER_RPC_PER_ROUND)
        # Sweeps: every Timestamp, Decimal and Struct field of every request, in turn, gets
        # each of the edges that poisoned metering or billing before, the rest plausible.
        for index, rpc in enumerate(order):
            for kind, edges in SWEEP_EDGES.items():
                for at in range(min(fields_of_kind(rpc.method.input_type, kind), SWEEP_FIELDS_PER_KIND)):
                    for number, value in enumerate(edges):
                        if state["broken"]:
                            break
                        state["swept"] = False
                        strategy = swept_requests(rpc.method.input_type, pools, kind, at, value)
                        fuzz_one_rpc(rpc, fuzz_seed * 7_919 + index * 1_000 + at * 100 + number, 4, strategy)
                        state["swept"] = False
        if recent and not state["broken"]:
            after_batch()
    finally:
        ch.close()
    run = {
        "name": name, "seed": fuzz_seed, "cases": stats.cases, "calls": stats.calls, "hostile": stats.hostile_calls,
        "batches": stats.batches, "rpcs_total": len(rpcs), "rpcs_covered": len(stats.by_rpc),
        "seconds": time.monotonic() - started, "canaries": len(canary.acknowledged),
        "canary_duplicates": canary.duplicates_acknowledged,
        # Each passed check saw every canary acknowledged so far counted exactly once.
        "canary_checks_passed": stats.canaries_ok, "canary_checks": stats.batches + 1, "stopped": state["broken"],
        "findings": len(stats.findings), "codes": dict(stats.by_code.most_common()),
    }
    RUNS.append(run)
    out = REPO / ".tally" / "fuzz"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(
        {**run, "by_rpc": dict(stats.by_rpc), "findings": [f.__dict__ for f in stats.findings]}, indent=1
    ))
    print(f"\nfuzz {name}: {json.dumps(run)}")
    stats.uncovered = sorted({r.name for r in rpcs} - set(stats.by_rpc))
    return stats


def describe(findings: list[Finding]) -> str:
    return "\n".join(f"- {f.rpc} [{f.kind} {f.code}] {f.message[:300]}\n    request: {f.request[:600]}" for f in findings)


def assert_clean(stats: Stats) -> None:
    assert not stats.findings, f"{len(stats.findings)} distinct findings:\n{describe(stats.findings)}"
    assert not stats.uncovered, f"RPCs never called: {stats.uncovered}"


