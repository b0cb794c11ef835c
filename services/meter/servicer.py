"""gRPC entrypoint of the meter service: decode, call one use case, encode."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from google.protobuf import duration_pb2

from services.meter import mapping
from services.meter.consumer import lag_of
from services.meter.service import AlertBook, BackfillService, BackfillView, UsageQueries, UsageQuery
from tally.errors import Violations
from tally.pagination import decode_page_token, encode_page_token, page_size
from tally.quarantine import Quarantine
from tally_gen.common.v1 import common_pb2
from tally_gen.meter.v1 import meter_pb2, meter_pb2_grpc

ALERT_CURSOR = "meter.alert_cursor"
THRESHOLD_PAGE = "meter.thresholds"


def _usage_query(request, problems: Violations, group_by=()) -> UsageQuery:
    start, end = mapping.required_range(request.start, request.end, request.HasField("start"), request.HasField("end"), problems)
    which = request.customer.WhichOneof("ref")
    subscription = request.subscription.WhichOneof("ref") if request.HasField("subscription") else None
    if request.HasField("subscription") and not (request.subscription.id or request.subscription.external_id):
        problems.add("subscription", "name a subscription by id or external_id", "SUBSCRIPTION_REF_EMPTY")
    return UsageQuery(
        customer_id=request.customer.id if which == "id" else "",
        customer_external_id=request.customer.external_id if which == "external_id" else "",
        meter_key=request.meter_key,
        start=start,
        end=end,
        group_by=tuple(group_by),
        dimension_filter=dict(request.dimension_filter),
        subscription_id=request.subscription.id if subscription == "id" else "",
        subscription_external_id=request.subscription.external_id if subscription == "external_id" else "",
        include_unattributed=request.include_unattributed,
        only_unattributed=request.only_unattributed,
    )


def _backfill(view: BackfillView) -> meter_pb2.Backfill:
    return meter_pb2.Backfill(
        id=view.id,
        meter_key=view.meter_key,
        state=mapping.BACKFILL_STATES.get(view.state, meter_pb2.BACKFILL_STATE_UNSPECIFIED),
        position=view.position,
        target_position=view.target_position,
        entries_applied=view.entries_applied,
        error=view.error,
        create_time=mapping.to_timestamp(view.create_time),
        finish_time=mapping.to_timestamp(view.finish_time),
    )


def _alert_cursor(sequence: int) -> str:
    return encode_page_token({"seq": sequence}, kind=ALERT_CURSOR)


def _after_sequence(token: str, field: str) -> int:
    state = decode_page_token(token, kind=ALERT_CURSOR, field=field)
    return int(state["seq"]) if state else 0


class MeterServicer(meter_pb2_grpc.MeterServiceServicer):
    def __init__(
        self,
        queries: UsageQueries,
        alerts: AlertBook,
        backfills: BackfillService,
        watch_poll_seconds: float = 1.0,
        applier_health: Callable[[], tuple[bool, str, datetime | None]] | None = None,
        cache_quarantine: Quarantine | None = None,
    ) -> None:
        self._applier_health = applier_health
        self._cache_quarantine = cache_quarantine
        self._queries = queries
        self._alerts = alerts
        self._backfills = backfills
        self._watch_poll = watch_poll_seconds

    async def GetUsage(self, request, context):
        problems = Violations()
        result = await self._queries.get_usage(_usage_query(request, problems, request.group_by), problems)
        return mapping.usage_to_proto(result)

    async def BatchGetUsage(self, request, context):
        problems = [Violations(f"queries[{i}]") for i in range(len(request.queries))]
        queries = [_usage_query(q, found, q.group_by) for q, found in zip(request.queries, problems)]
        results = await self._queries.batch_get_usage(queries, problems)
        return meter_pb2.BatchGetUsageResponse(results=[mapping.usage_to_proto(r) for r in results])

    async def UsageSeries(self, request, context):
        problems = Violations()
        points = await self._queries.usage_series(
            _usage_query(request, problems), mapping.granularity(request.granularity), request.time_zone, problems
        )
        return meter_pb2.UsageSeriesResponse(
            points=[
                meter_pb2.SeriesPoint(start=mapping.to_timestamp(s), end=mapping.to_timestamp(e), value=mapping.decimal_to_proto(v))
                for s, e, v in points
            ]
        )

    async def GetMeterStatus(self, request, context):
        state = await self._queries.status()
        entries_behind, seconds_behind = lag_of(state)
        quarantined_count, quarantined = await self._queries.quarantined(100)
        stalled, stall_reason, stalled_since = self._applier_health() if self._applier_health else (False, "", None)
        return meter_pb2.GetMeterStatusResponse(
            quarantined_entries=quarantined_count,
            recent_quarantined=[
                common_pb2.QuarantinedRecord(
                    component="meter.applier", kind=r["kind"], id=r["entry_id"], reason=r["reason"],
                    first_seen=mapping.to_timestamp(r["quarantined_at"]), last_seen=mapping.to_timestamp(r["quarantined_at"]),
                    occurrences=1, position=r["position"],
                )
                for r in quarantined
            ],
            applier_stalled=stalled,
            stall_reason=stall_reason,
            stalled_since=mapping.to_timestamp(stalled_since) if stalled_since else None,
            catalog_cache_quarantined=self._cache_quarantine.count if self._cache_quarantine else 0,
            applied_position=state.applied_position,
            head_position=state.head_position,
            events_behind=entries_behind,
            time_behind=duration_pb2.Duration(seconds=int(seconds_behind), nanos=int((seconds_behind % 1) * 1e9)),
            applied_watermark=mapping.to_timestamp(state.applied_watermark),
            unmetered_events=state.unmetered_events,
            unknown_meter_records=state.unknown_meter_records,
            unknown_customer_entries=state.unknown_customer_entries,
            last_apply_time=mapping.to_timestamp(state.last_apply_time),
            unusable_value_events=state.unusable_value_events,
            caught_up=state.caught_up,
            entries_applied=state.entries_applied,
            unattributed_entries=state.unattributed_entries,
        )

    async def BackfillMeter(self, request, context):
        return meter_pb2.BackfillMeterResponse(backfill=_backfill(await self._backfills.start_backfill(request.meter_key)))

    async def GetBackfill(self, request, context):
        return meter_pb2.GetBackfillResponse(backfill=_backfill(await self._backfills.get_backfill(request.id)))

    async def CreateThreshold(self, request, context):
        threshold = await self._alerts.create_threshold(mapping.new_threshold(request))
        return meter_pb2.CreateThresholdResponse(threshold=mapping.threshold_to_proto(threshold))

    async def ListThresholds(self, request, context):
        limit = page_size(request.page_size)
        state = decode_page_token(request.page_token, kind=THRESHOLD_PAGE)
        found = await self._alerts.list_thresholds(request.meter_key, state["after"] if state else "", limit + 1)
        token = encode_page_token({"after": found[limit - 1].id}, kind=THRESHOLD_PAGE) if len(found) > limit else ""
        return meter_pb2.ListThresholdsResponse(
            thresholds=[mapping.threshold_to_proto(t) for t in found[:limit]], next_page_token=token
        )

    async def DeleteThreshold(self, request, context):
        await self._alerts.delete_threshold(request.id)
        return meter_pb2.DeleteThresholdResponse()

    async def ListAlerts(self, request, context):
        limit = page_size(request.page_size)
        after = _after_sequence(request.page_token, "page_token")
        found = await self._alerts.alerts_after(after, request.customer_id, request.meter_key, limit + 1)
        token = _alert_cursor(found[limit - 1].sequence) if len(found) > limit else ""
        return meter_pb2.ListAlertsResponse(
            alerts=[mapping.alert_to_proto(a, _alert_cursor(a.sequence)) for a in found[:limit]], next_page_token=token
        )

    async def WatchAlerts(self, request, context):
        after = _after_sequence(request.after_cursor, "after_cursor")
        while True:
            found = await self._alerts.alerts_after(after, request.customer_id, "", 500)
            for alert in found:
                after = alert.sequence
                yield meter_pb2.WatchAlertsResponse(alert=mapping.alert_to_proto(alert, _alert_cursor(alert.sequence)))
            if not found:
                # Woken at once by this replica's applier; the poll covers alerts from others.
                await self._alerts.wait_for_new(self._watch_poll)
            await asyncio.sleep(0)
