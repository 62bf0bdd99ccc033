"""Server interceptors: domain errors → rich status (AIP-193), deadlines, request logging.

This is the one place where MedPayError becomes a gRPC status. Anything unexpected becomes a plain
INTERNAL with no detail (the detail goes to the log, scrubbed), never a stack trace to the caller.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy.exc import DBAPIError

from services.runtime import metrics
from services.runtime.errors import DatabaseUnavailable, InvalidArgument, MedPayError, NotOffered
from services.runtime.masking import scrub
from services.runtime.validation import reject_nul_characters

log = logging.getLogger("medpay.rpc")
ERROR_DOMAIN = "medpay.mesh"
# Below this much time left, a request is refused at once rather than started.
MIN_USEFUL_DEADLINE_S = 0.02

# Seconds left on the inbound call, so outbound calls can be clamped to it.
inbound_time_remaining: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "inbound_time_remaining", default=None
)
_inbound_started: contextvars.ContextVar[float] = contextvars.ContextVar("inbound_started", default=0.0)


def outbound_timeout(default_s: float) -> float:
    """The deadline for an outbound call: the configured default, clamped to what the caller left us."""
    remaining = inbound_time_remaining.get()
    if remaining is None:
        return default_s
    left = remaining - (time.monotonic() - _inbound_started.get())
    return max(min(default_s, left - 0.01), 0.001)


def detached_context() -> contextvars.Context:
    """A copy of the current context (trace included) without the inbound call's deadline: for a
    background task that outlives the call that started it."""
    context = contextvars.copy_context()
    context.run(inbound_time_remaining.set, None)
    return context


def to_status(error: MedPayError) -> status_pb2.Status:
    code = getattr(code_pb2, error.status_name)
    metadata = {key: scrub(value) for key, value in error.metadata.items()}
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
    details = [_pack(info)]
    if isinstance(error, InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.violations
            ]
        )
        details.append(_pack(bad_request))
    return status_pb2.Status(code=code, message=scrub(error.message), details=details)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
# A server-streaming handler yields its messages, or writes them itself and returns a coroutine.
StreamBehavior = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any] | Awaitable[None]]


class ErrorAndDeadlineInterceptor(grpc.aio.ServerInterceptor):
    """Wraps unary-unary and unary-stream handlers (the shapes the contracts use). A call's budget
    for outbound work is the caller's deadline, clamped to `max_deadline_s` (also the budget of a
    caller that sent none)."""

    def __init__(self, max_deadline_s: float = 60.0) -> None:
        self._max_deadline_s = max_deadline_s

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is not None and handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _guard(method, handler.unary_unary, self._max_deadline_s),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler is not None and handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _guard_stream(method, handler.unary_stream, self._max_deadline_s),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


class _CallGuard:
    """What every call gets, unary or streaming: a deadline check, the inbound deadline recorded
    for outbound calls, NUL characters refused, errors mapped in one place, one log line, and the
    call counted (the work it does and spawns counted as its own, see services.runtime.metrics)."""

    def __init__(self, method: str, context: grpc.aio.ServicerContext, max_deadline_s: float) -> None:
        self.method, self.context, self.max_deadline_s = method, context, max_deadline_s
        self.started = time.monotonic()
        self.outcome = "OK"
        self.origin = metrics.serving(method)

    async def enter(self, request: Any) -> None:
        remaining = self.context.time_remaining()
        if remaining is not None and remaining < MIN_USEFUL_DEADLINE_S:
            await self.context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline too short to start")
        budget = self.max_deadline_s if remaining is None else min(remaining, self.max_deadline_s)
        inbound_time_remaining.set(budget)
        _inbound_started.set(self.started)
        reject_nul_characters(request)

    async def fail(self, error: BaseException) -> None:
        """Map the error to a status (or re-raise what must pass through)."""
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            # Nothing was committed; the retry with the same request id gets a fresh connection.
            error = DatabaseUnavailable("the database connection was lost; retry the request")
        if isinstance(error, MedPayError):
            self.outcome = error.reason
            status = rpc_status.to_status(to_status(error))
            await self.context.abort(status.code, status.details, status.trailing_metadata)
        # Cancellation, generator close and the abort itself pass through untouched.
        if isinstance(error, grpc.aio.AbortError) or not isinstance(error, Exception):
            self.outcome = "ABORTED_OR_CANCELLED"
            raise error
        self.outcome = "INTERNAL"
        log.error("unexpected error in %s", self.method, exc_info=error)
        await self.context.abort(grpc.StatusCode.INTERNAL, "internal error; see the service log")

    def log(self) -> None:
        metrics.grpc_served(self.method, self.outcome)
        metrics.done_serving(self.origin)
        elapsed_ms = round((time.monotonic() - self.started) * 1000, 2)
        level = logging.DEBUG if self.outcome == "OK" else logging.WARNING
        fields = {"rpc.method": self.method, "outcome": self.outcome, "elapsed_ms": elapsed_ms}
        log.log(level, "rpc %s %s", self.method, self.outcome, extra={"fields": fields})


def _guard(method: str, behavior: Behavior, max_deadline_s: float) -> Behavior:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        guard = _CallGuard(method, context, max_deadline_s)
        try:
            await guard.enter(request)
            return await _offered(method, behavior, request, context)
        except BaseException as error:  # noqa: BLE001 - mapped, or re-raised, by guard.fail
            await guard.fail(error)
        finally:
            guard.log()

    return guarded


def _guard_stream(method: str, behavior: StreamBehavior, max_deadline_s: float) -> StreamBehavior:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        guard = _CallGuard(method, context, max_deadline_s)
        try:
            await guard.enter(request)
            try:
                responses = behavior(request, context)
            except NotImplementedError:
                raise NotOffered(f"{method} is part of the contract but not offered yet") from None
            if inspect.isawaitable(responses):
                # A handler that writes its messages with context.write() and returns None, like
                # grpc.health.v1.Health/Watch: the stream is what it wrote.
                await responses
                return
            async for response in responses:
                yield response
        except BaseException as error:  # noqa: BLE001 - mapped, or re-raised, by guard.fail
            await guard.fail(error)
        finally:
            guard.log()

    return guarded


async def _offered(method: str, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext) -> Any:
    """Run the handler. An RPC the contract defines but this service does not implement yet (the
    generated base raises NotImplementedError) answers UNIMPLEMENTED with reason NOT_OFFERED."""
    try:
        return await behavior(request, context)
    except NotImplementedError:
        raise NotOffered(f"{method} is part of the contract but not offered by this deployment yet") from None
