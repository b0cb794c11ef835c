"""Run one fuzz case against the real services and judge its outcome.

Per call: no UNKNOWN or INTERNAL; no RESOURCE_EXHAUSTED that Tally did not mean (ours carry
google.rpc.ErrorInfo; an oversized error detail reaches the client as a bare
RESOURCE_EXHAUSTED from the transport); every INVALID_ARGUMENT carries google.rpc.BadRequest
naming at least one field; no call outlives its deadline; no error text leaks internals.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import Counter
from dataclasses import dataclass, field

import grpc
from google.protobuf.json_format import MessageToDict
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tally.grpc_errors import field_violations

from tests.fuzz.rpcs import Rpc
from tests.fuzz.strategies import Pools
from tests.fuzz.world import Channels, harvest

CALL_TIMEOUT_SECONDS = 30.0
WATCH_READ_SECONDS = 1.0
LEAKS = ("sqlalchemy", "asyncpg", "traceback", "psycopg", 'file "', "decimal.invalidoperation", "<class ")


@dataclass
class Finding:
    rpc: str
    kind: str  # "status", "bad_request", "deadline", "leak", "system"
    code: str
    message: str
    request: str  # JSON (strings over 200 characters abbreviated)

    def signature(self) -> tuple[str, str, str, str]:
        text = re.sub(r"[0-9a-f]{8,}|\d+", "#", self.message.lower())[:100]
        if self.kind == "system":  # one per poison batch: the canary's complaint is the same for all
            text += self.request[:300]
        return (self.rpc, self.kind, self.code, text)


@dataclass
class Stats:
    cases: int = 0
    calls: int = 0
    batches: int = 0
    hostile_calls: int = 0
    by_code: Counter = field(default_factory=Counter)
    by_rpc: Counter = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    seen: set = field(default_factory=set)
    canaries_ok: int = 0
    # RPCs the run never called (it stops early when metering or billing stopped).
    uncovered: list[str] = field(default_factory=list)

    def record(self, finding: Finding) -> None:
        if finding.signature() not in self.seen:
            self.seen.add(finding.signature())
            self.findings.append(finding)


def _abbreviate(value):
    if isinstance(value, str):
        if len(value) > 200:
            return f"{value[:40]}...<{len(value)} chars>"
        return value
    if isinstance(value, list):
        if len(value) > 20:
            return [_abbreviate(v) for v in value[:3]] + [f"...<{len(value)} items>"]
        return [_abbreviate(v) for v in value]
    if isinstance(value, dict):
        if len(value) > 20:
            items = list(value.items())[:3]
            return {**{k[:200]: _abbreviate(v) for k, v in items}, "...": f"<{len(value)} entries>"}
        return {k[:200]: _abbreviate(v) for k, v in value.items()}
    return value


def request_json(messages) -> str:
    dicts = []
    for message in messages:
        try:
            dicts.append(MessageToDict(message, preserving_proto_field_name=True))
        except Exception:  # out-of-range Timestamps and NaN have no JSON form
            dicts.append({"text_format": str(message)[:2000]})
    return json.dumps(_abbreviate(dicts[0] if len(dicts) == 1 else dicts), ensure_ascii=True, default=str)


def judge(rpc: Rpc, error: grpc.RpcError, messages, stats: Stats) -> None:
    code = error.code()
    details = error.details() or ""
    stats.by_code[code.name] += 1

    def found(kind: str, message: str) -> None:
        stats.record(Finding(rpc.name, kind, code.name, message[:500], request_json(messages)))

    if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
        found("status", details)
        return
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        found("deadline", f"no answer within {CALL_TIMEOUT_SECONDS:.0f}s")
        return
    if any(leak in details.lower() for leak in LEAKS):
        found("leak", details)
    status = None
    try:
        status = rpc_status.from_call(error)
    except ValueError as mismatch:  # grpc-status-details-bin disagreeing with the status
        found("status", f"inconsistent status details: {mismatch}")
        return
    detail_types = [d.type_url.rsplit("/", 1)[-1] for d in status.details] if status else []
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "google.rpc.ErrorInfo" not in detail_types:
        found("status", f"RESOURCE_EXHAUSTED not raised by Tally (no ErrorInfo): {details}")
        return
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        fields = []
        for detail in status.details if status else []:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                fields.extend(v.field for v in bad.field_violations if v.field)
        if not fields:
            found("bad_request", f"INVALID_ARGUMENT without a BadRequest field violation: {details}")


TRACE = os.environ.get("TALLY_FUZZ_TRACE", "")


def trace(rpc: Rpc, messages, code: str, details: str = "") -> None:
    """With TALLY_FUZZ_TRACE=<file>, every call and its status code, one JSON line each."""
    if TRACE:
        line = {"rpc": rpc.name, "code": code, "details": details[:300], "request": json.loads(request_json(messages))}
        with open(TRACE, "a") as out:
            out.write(json.dumps(line) + "\n")


def call(ch: Channels, rpc: Rpc, messages, pools: Pools, stats: Stats) -> None:
    """Make one call (a unary request, a few stream messages, or a short watch) and judge it."""
    channel = ch.channels[rpc.service]
    serialize = lambda m: m.SerializeToString()  # noqa: E731
    deserialize = rpc.response_class.FromString
    stats.calls += 1
    stats.by_rpc[rpc.name] += 1
    try:
        if not rpc.client_streaming and not rpc.server_streaming:
            reply = channel.unary_unary(rpc.path, serialize, deserialize)(messages[0], timeout=CALL_TIMEOUT_SECONDS)
            harvest(pools, reply)
        elif not rpc.client_streaming:
            # A watch: read what comes within a second, then hang up.
            stream = channel.unary_stream(rpc.path, serialize, deserialize)(messages[0], timeout=CALL_TIMEOUT_SECONDS)
            timer = threading.Timer(WATCH_READ_SECONDS, stream.cancel)
            timer.start()
            try:
                for count, reply in enumerate(stream):
                    if count >= 50:
                        stream.cancel()
                        break
            finally:
                timer.cancel()
        elif not rpc.server_streaming:
            reply = channel.stream_unary(rpc.path, serialize, deserialize)(iter(messages), timeout=CALL_TIMEOUT_SECONDS)
            harvest(pools, reply)
        else:
            replies = channel.stream_stream(rpc.path, serialize, deserialize)(iter(messages), timeout=CALL_TIMEOUT_SECONDS)
            for reply in replies:
                harvest(pools, reply)
        stats.by_code["OK"] += 1
        trace(rpc, messages, "OK")
    except grpc.RpcError as error:
        if TRACE:
            try:
                named = field_violations(error)[:3]
            except ValueError:
                named = []
            trace(rpc, messages, error.code().name, f"{error.details()} {named}")
        if error.code() == grpc.StatusCode.CANCELLED and rpc.server_streaming and not rpc.client_streaming:
            stats.by_code["OK"] += 1  # our own hang-up of a watch
            return
        judge(rpc, error, messages, stats)

