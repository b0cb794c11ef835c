"""Python client library for Tally: a batching, retrying event sender and channel helpers.

``AsyncEventSender`` (asyncio) and ``EventSender`` (threads) stream events to ingest over
StreamEvents. ``connect`` opens a channel with request-id propagation and the retry policy in
``RETRY_SERVICE_CONFIG`` (UNAVAILABLE, exponential backoff) for use with the generated stubs.
"""

from tally.channels import RETRY_SERVICE_CONFIG, channel_options, connect, connect_service
from tally.client.sender import (
    RETRYABLE_CODES,
    AsyncEventSender,
    EventOutcome,
    SenderClosed,
    SenderError,
    SenderStats,
    build_event,
    to_struct,
)
from tally.client.sync import EventSender

__all__ = [
    "RETRY_SERVICE_CONFIG",
    "RETRYABLE_CODES",
    "AsyncEventSender",
    "EventOutcome",
    "EventSender",
    "SenderClosed",
    "SenderError",
    "SenderStats",
    "build_event",
    "channel_options",
    "connect",
    "connect_service",
    "to_struct",
]
