"""A database connection lost mid-request answers UNAVAILABLE (retry with the same request id),
not INTERNAL: the engine no longer pre-pings each checkout, so a connection the server dropped is
found by the one transaction that uses it."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from sqlalchemy.exc import DBAPIError

from services.runtime.interceptors import _CallGuard


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None

    def time_remaining(self) -> float | None:
        return None

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing: Any = None) -> None:
        self.code = code
        raise Aborted(details)


def _lost_connection() -> DBAPIError:
    return DBAPIError(
        "SELECT 1", {}, ConnectionResetError("server closed the connection"), connection_invalidated=True
    )


async def test_a_lost_connection_is_unavailable() -> None:
    context = FakeContext()
    guard = _CallGuard("/medpay.payment.v1.PaymentService/GetPaymentOrder", context, 30.0)  # type: ignore[arg-type]
    with pytest.raises(Aborted):
        await guard.fail(_lost_connection())
    assert context.code is grpc.StatusCode.UNAVAILABLE


async def test_another_database_error_stays_internal() -> None:
    context = FakeContext()
    guard = _CallGuard("/medpay.payment.v1.PaymentService/GetPaymentOrder", context, 30.0)  # type: ignore[arg-type]
    with pytest.raises(Aborted):
        await guard.fail(DBAPIError("SELECT 1", {}, ValueError("syntax"), connection_invalidated=False))
    assert context.code is grpc.StatusCode.INTERNAL
