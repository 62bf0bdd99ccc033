"""Time in one place: UTC inside, Asia/Shanghai for business dates (what finance calls 'the day')."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")
# The business days the platform answers for. A day outside is a caller's mistake (0001-01-01,
# 9999-12-31), and the UTC bounds of the first and last days datetime can hold do not exist.
FIRST_BUSINESS_DATE = date(2000, 1, 1)
LAST_BUSINESS_DATE = date(2099, 12, 31)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A naive datetime is UTC by the platform's convention (db.UtcDateTime stores every moment
    in UTC and reads it back aware); an aware one is converted."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def business_date_of(moment: datetime) -> date:
    return as_utc(moment).astimezone(HOSPITAL_TZ).date()


def business_day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a business day, in UTC."""
    start = datetime(day.year, day.month, day.day, tzinfo=HOSPITAL_TZ)
    end = datetime.fromordinal(day.toordinal() + 1).replace(tzinfo=HOSPITAL_TZ)
    return start.astimezone(UTC), end.astimezone(UTC)


def new_id(prefix: str) -> str:
    """A unique id with a readable prefix; 28 chars for 'ord', short enough for out_trade_no."""
    return f"{prefix}_{uuid.uuid4().hex[:24]}"
