"""What a new user of payment-core ran into: each test showed the defect before its fix.
Same in-process harness as test_payment_core (real gRPC server, FakeChannel, FakeInsurance), on
SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from medpay.payment.v1 import payment_pb2 as pb

from tests.service import test_payment_core as base
from tests.service.test_payment_core import Harness, created_and_paying, self_pay

# The fixtures of the existing harness, shared rather than copied.
database = base.database
harness = base.harness

BEIJING = timezone(timedelta(hours=8))


@pytest.mark.parametrize(
    ("wechat_success_time", "utc"),
    [
        ("2026-11-25T10:00:00+08:00", datetime(2026, 11, 25, 2, 0, tzinfo=UTC)),
        # Late in the Beijing day: kept as Beijing wall-clock time it would fall on the 26th.
        ("2026-11-25T23:30:00+08:00", datetime(2026, 11, 25, 15, 30, tzinfo=UTC)),
    ],
)
async def test_a_beijing_success_time_is_stored_as_the_utc_instant_it_names(
    harness: Harness, wechat_success_time: str, utc: datetime
) -> None:
    paying = await created_and_paying(harness, self_pay())
    at = datetime.fromisoformat(wechat_success_time)
    reply = await harness.notify(*harness.channel.patient_pays(paying.payment.out_trade_no, at=at))
    assert reply.status_code == 204
    await harness.settled()

    order = await harness.order(paying.order.order_id)
    [payment] = order.payments
    assert payment.succeeded_at.ToDatetime(tzinfo=UTC) == utc
    day = await harness.payment.ExportTransactions(pb.ExportTransactionsRequest(business_date="2026-11-25"))
    [moved] = [t for t in day.transactions if t.order_id == order.order_id]
    assert moved.occurred_at.ToDatetime(tzinfo=UTC) == utc
    next_day = await harness.payment.ExportTransactions(
        pb.ExportTransactionsRequest(business_date="2026-11-26")
    )
    assert order.order_id not in [t.order_id for t in next_day.transactions]
