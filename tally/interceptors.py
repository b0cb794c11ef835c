"""Server and client interceptors: request ids, structured logs and domain error mapping."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import grpc
import structlog

from tally.context import REQUEST_ID_HEADER, current_request_id, new_request_id, request_id_var
from tally.errors import DomainError, InvalidInput, Unavailable, Violation
from tally.grpc_errors import status_code_for, to_rpc_status
from tally.request_checks import request_violations

log = structlog.get_logger()

# RPCs that run constantly and would drown the log at info level.
_QUIET_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _decoder(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    """Parse requests inside the handler, so bytes that are not a valid message (bad UTF-8 in
    a string, nesting past the parser's limit, truncation), unknown enum numbers and invalid
    Timestamps answer INVALID_ARGUMENT with field violations, instead of an UNKNOWN status
    that echoes the parser's (or ToDatetime's) exception."""
    if deserializer is None:
        return lambda raw: raw

    def decode(raw: bytes) -> Any:
        try:
            message = deserializer(raw)
        except Exception as error:  # noqa: BLE001 - any parse failure is the caller's input
            raise InvalidInput(
                "the request is not a valid protobuf message",
                violations=[Violation("request", type(error).__name__ + ": " + str(error)[:200], "MALFORMED_REQUEST")],
                reason="MALFORMED_REQUEST",
            ) from None
        problems = request_violations(message)
        if problems:
            raise InvalidInput("the request has invalid enum values or timestamps", violations=problems)
        return message

    return decode


def _blame_request(message: Any, error: Exception) -> InvalidInput | None:
    """When a handler fails unexpectedly on a request with an invalid Timestamp or enum deep
    inside (the thorough check), the request is at fault: INVALID_ARGUMENT, not UNKNOWN."""
    if message is None or type(error).__name__ == "AbortError":
        return None
    problems = request_violations(message, thorough=True)
    if not problems:
        return None
    return InvalidInput("the request has invalid enum values or timestamps", violations=problems)


def _database_unavailable(error: Exception) -> Unavailable | None:
    """A lost or refused database connection (Postgres restarting, failing over, out of
    connections) is UNAVAILABLE, which clients retry, not UNKNOWN: the request was fine and
    the pool reconnects by itself."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if _is_connection_failure(cause):
            return Unavailable(
                "the database is unavailable; retry shortly",
                reason="DATABASE_UNAVAILABLE",
                retry_after_seconds=1.0,
            )
        cause = getattr(cause, "orig", None) or cause.__cause__ or cause.__context__
    return None


def is_connection_failure(error: BaseException) -> bool:
    """True when ``error`` (or what caused it) is a lost or refused database connection."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if _is_connection_failure(cause):
            return True
        cause = getattr(cause, "orig", None) or cause.__cause__ or cause.__context__
    return False


def _is_connection_failure(error: BaseException) -> bool:
    import asyncpg  # the services' driver; imported here to keep this module light

    lost = (
        asyncpg.exceptions.PostgresConnectionError,
        asyncpg.exceptions.OperatorInterventionError,  # admin/crash shutdown, cannot connect now
        asyncpg.exceptions.InterfaceError,  # "connection is closed"
        # "cannot switch to state N; another operation is in progress": a session terminated
        # mid-operation leaves the protocol in a broken state (MagicStack/asyncpg#784, #1069);
        # the pool terminates that connection on release, so a retry gets a fresh one.
        asyncpg.exceptions.InternalClientError,
        # "sorry, too many clients already": Postgres is out of connection slots for now.
        asyncpg.exceptions.TooManyConnectionsError,
        ConnectionError,  # refused, reset, aborted, broken pipe
    )
    if isinstance(error, lost) or getattr(error, "connection_invalidated", False):  # SQLAlchemy's flag
        return True
    return isinstance(error, OSError) and _raised_in_asyncpg(error)


def _raised_in_asyncpg(error: BaseException) -> bool:
    """An OSError from inside the driver (such as a Postgres socket file that is gone), as
    opposed to one from, say, reading a template file."""
    tb = error.__traceback__
    while tb is not None:
        if "/asyncpg/" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


async def _decoded(request_iterator, decode: Callable[[bytes], Any]):
    async for raw in request_iterator:
        yield decode(raw)


def _request_id_from(metadata) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and value:
            return str(value)[:128]
    return new_request_id()


class ServerContextInterceptor(grpc.aio.ServerInterceptor):
    """Binds rpc and request_id per call, logs its outcome and maps DomainError to a status.

    The wrapped handler of a method is built once and reused while the handler beneath stays
    the same object (registered handlers do; a per-call handler, such as the API-key guard's,
    gets a fresh wrapper each call): building closures and handler tuples per call was a
    measurable part of a unary call's CPU on the ingest hot path.
    """

    def __init__(self, on_finish: Callable[[str, str, float], None] | None = None) -> None:
        self._on_finish = on_finish
        # method -> (the handler beneath, its wrapper); one entry per method.
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler):
        quiet = method.startswith(_QUIET_PREFIXES)
        on_finish = self._on_finish

        def bind(context) -> float:
            request_id = _request_id_from(context.invocation_metadata())
            request_id_var.set(request_id)
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(rpc=method, request_id=request_id)
            return time.perf_counter()

        def finish(started: float, code: str, context) -> None:
            if code == "OK":
                code = _code_of(context)
            elapsed = time.perf_counter() - started
            if on_finish is not None:
                on_finish(method, code, elapsed)
            if not quiet:
                log.debug("rpc_finished", code=code, elapsed_ms=round(elapsed * 1000, 2))

        decode = _decoder(handler.request_deserializer)
        serialize = handler.response_serializer

        def decode_stream(request_iterator):
            return _decoded(request_iterator, decode)

        # Each wrapper: bind, run, map failures to statuses (_failure), record the outcome.
        # ``message`` is the decoded request once there is one (unary requests only), so that
        # an unexpected failure on a request with invalid contents can blame the request.
        def returning(inner, prepare, blame: bool):
            """A handler that returns its response, or sends with context.write() and returns
            (the standard grpc.health.v1 Health/Watch does)."""

            async def call(request, context):
                started = bind(context)
                message = None
                code = "OK"
                try:
                    message = prepare(request)
                    return await inner(message, context)
                except Exception as error:  # mapped or logged, then re-raised for grpc
                    code, status = _failure(error, message if blame else None, context)
                    if status is not None:
                        await _abort(context, status)
                    raise
                finally:
                    finish(started, code, context)

            return call

        def streaming(inner, prepare, blame: bool):
            """A handler that is an async generator of responses."""

            async def call(request, context):
                started = bind(context)
                message = None
                code = "OK"
                try:
                    message = prepare(request)
                    async for item in inner(message, context):
                        yield item
                except Exception as error:  # see above
                    code, status = _failure(error, message if blame else None, context)
                    if status is not None:
                        await _abort(context, status)
                    raise
                finally:
                    finish(started, code, context)

            return call

        def either(inner, prepare, blame: bool):
            # Iterating a handler that is a coroutine with ``async for`` fails: wrap what it is.
            make = streaming if inspect.isasyncgenfunction(inner) else returning
            return make(inner, prepare, blame)

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(returning(handler.unary_unary, decode, True), None, serialize)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(either(handler.unary_stream, decode, True), None, serialize)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                returning(handler.stream_unary, decode_stream, False), None, serialize
            )
        return grpc.stream_stream_rpc_method_handler(
            either(handler.stream_stream, decode_stream, False), None, serialize
        )


def _code_of(context) -> str:
    code = context.code() if hasattr(context, "code") else None
    return code.name if isinstance(code, grpc.StatusCode) else "OK"


async def _abort(context, error: DomainError) -> None:
    log.info("rpc_rejected", category=error.category.value, reason=error.reason, error=error.message)
    await context.abort_with_status(to_rpc_status(error))


def _failure(error: Exception, message: Any, context) -> tuple[str, DomainError | None]:
    """The code to record for a failed call, and the status to abort with, if any.

    A DomainError is its own status; an unexpected failure that the request (invalid contents,
    ``message`` being the decoded request) or a lost database explains gets one too. Anything
    else has no status: it is logged (``_code_name``) and re-raised for grpc.
    """
    if isinstance(error, DomainError):
        return status_code_for(error).name, error
    mapped = _blame_request(message, error) or _database_unavailable(error)
    if mapped is not None:
        return status_code_for(mapped).name, mapped
    return _code_name(error, _code_of(context)), None


def _code_name(error: Exception, set_code: str = "OK") -> str:
    # context.abort raises an AbortError after setting the code, and the generated base
    # servicer sets UNIMPLEMENTED before raising: both report the code the client sees.
    # Anything else is a bug.
    if set_code != "OK":
        return set_code
    if type(error).__name__ == "AbortError":
        return "ABORTED_BY_HANDLER"
    log.exception("rpc_failed")
    return "INTERNAL"


def _with_request_id(client_call_details):
    request_id = current_request_id() or new_request_id()
    metadata = list(client_call_details.metadata or [])
    if not any(k == REQUEST_ID_HEADER for k, _ in metadata):
        metadata.append((REQUEST_ID_HEADER, request_id))
    return client_call_details._replace(metadata=metadata) if hasattr(
        client_call_details, "_replace"
    ) else grpc.aio.ClientCallDetails(
        client_call_details.method,
        client_call_details.timeout,
        metadata,
        client_call_details.credentials,
        client_call_details.wait_for_ready,
    )


class RequestIdClientInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Passes the current request id on to downstream services."""

    async def intercept_unary_unary(self, continuation, client_call_details, request) -> Any:
        return await continuation(_with_request_id(client_call_details), request)

    async def intercept_unary_stream(self, continuation, client_call_details, request) -> Any:
        return await continuation(_with_request_id(client_call_details), request)

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator) -> Any:
        return await continuation(_with_request_id(client_call_details), request_iterator)

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator) -> Any:
        return await continuation(_with_request_id(client_call_details), request_iterator)
