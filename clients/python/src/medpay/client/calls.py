"""How the facade places one RPC: a deadline on every attempt, bounded retries of UNAVAILABLE
(with the same request, hence the same request_id), and rich errors instead of AioRpcError."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from medpay.client.errors import MedPayError, error_from_rpc

Response = TypeVar("Response")


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Per-attempt deadlines in seconds. Writes are longer: an insured order waits for four
    insurer transactions. `reconciliation_s` bounds the whole wait for a reconciliation run (the
    service answers a long run while it is RUNNING, and the facade polls it)."""

    read_s: float = 5.0
    write_s: float = 20.0
    reconciliation_s: float = 120.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """At most `attempts` tries, exponential back-off with jitter between them."""

    attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, MedPayError) and error.retryable


async def call_rpc(
    method: Callable[..., Awaitable[Response]], request: Any, timeout_s: float, policy: RetryPolicy
) -> Response:
    """Send `request` (unchanged between attempts) and return the response or raise MedPayError."""

    async def attempt() -> Response:
        try:
            return await method(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error) from error

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait_exponential_jitter(initial=policy.initial_backoff_s, max=policy.max_backoff_s),
        retry=retry_if_exception(_is_retryable),
        reraise=True,
    )
    response: Response = await retrying(attempt)
    return response
