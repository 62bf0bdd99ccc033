"""The simulator's memory: orders, refunds and notification attempts in one SQLite file.

Plain `sqlite3` on one connection, on purpose: the simulator is a single asyncio process, and every
handler reads and writes without an `await` in between, so each business step is atomic without
an ORM or locks. Uniqueness (out_trade_no, out_refund_no, transaction_id, refund_id) is still a
constraint, as the real gateway's would be. Times are stored as fixed-width UTC ISO strings so
they sort and compare as text.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    out_trade_no   TEXT PRIMARY KEY,
    mchid          TEXT NOT NULL,
    appid          TEXT NOT NULL,
    trade_type     TEXT NOT NULL,
    description    TEXT NOT NULL,
    attach         TEXT,
    total_fen      INTEGER NOT NULL CHECK (total_fen > 0),
    notify_url     TEXT NOT NULL,
    time_expire    TEXT,
    code_url       TEXT,
    prepay_id      TEXT,
    trade_state    TEXT NOT NULL,
    transaction_id TEXT UNIQUE,
    success_time   TEXT,
    payer_openid   TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    traceparent    TEXT,
    patient_action TEXT,
    patient_at     TEXT
);
CREATE TABLE IF NOT EXISTS refunds (
    out_refund_no TEXT PRIMARY KEY,
    refund_id     TEXT NOT NULL UNIQUE,
    out_trade_no  TEXT NOT NULL REFERENCES orders (out_trade_no),
    refund_fen    INTEGER NOT NULL CHECK (refund_fen > 0),
    reason        TEXT,
    notify_url    TEXT,
    status        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    success_time  TEXT,
    traceparent   TEXT,
    outcome       TEXT,
    outcome_at    TEXT
);
CREATE TABLE IF NOT EXISTS notifications (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    out_trade_no  TEXT NOT NULL,
    out_refund_no TEXT,
    notify_url    TEXT NOT NULL,
    delivery      INTEGER NOT NULL DEFAULT 1,
    attempt       INTEGER NOT NULL,
    status_code   INTEGER,
    error         TEXT,
    sent_at       TEXT NOT NULL
);
"""
# Columns added after the first release; a simulator file written by an older build gains them.
_ADDED_COLUMNS = {
    "orders": {"patient_action": "TEXT", "patient_at": "TEXT"},
    "refunds": {"outcome": "TEXT", "outcome_at": "TEXT"},
    "notifications": {"delivery": "INTEGER NOT NULL DEFAULT 1"},
}


@dataclass(frozen=True, slots=True)
class SimOrder:
    out_trade_no: str
    mchid: str
    appid: str
    trade_type: str
    description: str
    attach: str | None
    total_fen: int
    notify_url: str
    time_expire: datetime | None
    code_url: str | None
    prepay_id: str | None
    trade_state: str
    transaction_id: str | None
    success_time: datetime | None
    payer_openid: str
    created_at: datetime
    traceparent: str | None
    # A code payment waiting for the patient's password (USERPAYING): what the patient will do
    # ("confirms" or "cancels"; None: never) and when.
    patient_action: str | None = None
    patient_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SimRefund:
    out_refund_no: str
    refund_id: str
    out_trade_no: str
    refund_fen: int
    reason: str | None
    notify_url: str | None
    status: str
    created_at: datetime
    success_time: datetime | None
    traceparent: str | None
    # While PROCESSING: the status the refund will reach (SUCCESS, ABNORMAL, CLOSED) and when.
    outcome: str | None = None
    outcome_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    event_id: str
    event_type: str
    out_trade_no: str
    out_refund_no: str | None
    notify_url: str
    attempt: int  # 1 for the first try of this delivery, then one more per resend
    status_code: int | None
    error: str | None
    sent_at: datetime
    delivery: int = 1  # 2 for the copy a `duplicate` fault sends after the first delivery

    @property
    def acknowledged(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


_TIME_COLUMNS = {"time_expire", "success_time", "created_at", "sent_at", "outcome_at", "patient_at"}


def to_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _from_text(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


Row = TypeVar("Row")


class SimStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._add_missing_columns()

    def close(self) -> None:
        self._db.close()

    def add_order(self, order: SimOrder) -> None:
        self._insert("orders", order)

    def order(self, out_trade_no: str) -> SimOrder | None:
        return self._one(SimOrder, "SELECT * FROM orders WHERE out_trade_no = ?", out_trade_no)

    def order_by_transaction_id(self, transaction_id: str) -> SimOrder | None:
        return self._one(SimOrder, "SELECT * FROM orders WHERE transaction_id = ?", transaction_id)

    def replace_order(self, order: SimOrder) -> None:
        self._db.execute(
            "UPDATE orders SET trade_state = ?, transaction_id = ?, success_time = ?, patient_action = ?,"
            " patient_at = ? WHERE out_trade_no = ?",
            (
                order.trade_state,
                order.transaction_id,
                _opt_text(order.success_time),
                order.patient_action,
                _opt_text(order.patient_at),
                order.out_trade_no,
            ),
        )

    def add_refund(self, refund: SimRefund) -> None:
        self._insert("refunds", refund)

    def refund(self, out_refund_no: str) -> SimRefund | None:
        return self._one(SimRefund, "SELECT * FROM refunds WHERE out_refund_no = ?", out_refund_no)

    def refund_by_id(self, refund_id: str) -> SimRefund | None:
        return self._one(SimRefund, "SELECT * FROM refunds WHERE refund_id = ?", refund_id)

    def refunds_of(self, out_trade_no: str) -> list[SimRefund]:
        return self._all(SimRefund, "SELECT * FROM refunds WHERE out_trade_no = ?", out_trade_no)

    def replace_refund(self, refund: SimRefund) -> None:
        self._db.execute(
            "UPDATE refunds SET status = ?, success_time = ?, outcome = ?, outcome_at = ?"
            " WHERE out_refund_no = ?",
            (
                refund.status,
                _opt_text(refund.success_time),
                refund.outcome,
                _opt_text(refund.outcome_at),
                refund.out_refund_no,
            ),
        )

    def all_orders(self) -> list[SimOrder]:
        return self._all(SimOrder, "SELECT * FROM orders ORDER BY created_at")

    def all_refunds(self) -> list[SimRefund]:
        return self._all(SimRefund, "SELECT * FROM refunds ORDER BY created_at")

    def refunds_in_flight(self) -> list[SimRefund]:
        """PROCESSING refunds with an outcome still to reach, soonest first."""
        query = (
            "SELECT * FROM refunds WHERE status = 'PROCESSING' AND outcome IS NOT NULL ORDER BY outcome_at"
        )
        return self._all(SimRefund, query)

    def orders_paid_between(self, start: datetime, end: datetime) -> list[SimOrder]:
        query = "SELECT * FROM orders WHERE success_time >= ? AND success_time < ? ORDER BY success_time"
        return self._all(SimOrder, query, to_text(start), to_text(end))

    def refunds_created_between(self, start: datetime, end: datetime) -> list[SimRefund]:
        query = "SELECT * FROM refunds WHERE created_at >= ? AND created_at < ? ORDER BY created_at"
        return self._all(SimRefund, query, to_text(start), to_text(end))

    def record_delivery(self, attempt: DeliveryAttempt) -> None:
        self._insert("notifications", attempt)

    def deliveries(self, out_trade_no: str, out_refund_no: str | None = None) -> list[DeliveryAttempt]:
        if out_refund_no is None:
            query = "SELECT * FROM notifications WHERE out_trade_no = ? ORDER BY id"
            return self._all(DeliveryAttempt, query, out_trade_no)
        query = "SELECT * FROM notifications WHERE out_trade_no = ? AND out_refund_no = ? ORDER BY id"
        return self._all(DeliveryAttempt, query, out_trade_no, out_refund_no)

    def _add_missing_columns(self) -> None:
        for table, columns in _ADDED_COLUMNS.items():
            present = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns.items():
                if name not in present:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def _insert(self, table: str, row: Any) -> None:
        names = [field.name for field in fields(row)]
        values = [_column_value(name, getattr(row, name)) for name in names]
        marks = ", ".join("?" for _ in names)
        self._db.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})", values)

    def _one(self, kind: type[Row], query: str, *params: object) -> Row | None:
        row = self._db.execute(query, params).fetchone()
        return None if row is None else _build(kind, row)

    def _all(self, kind: type[Row], query: str, *params: object) -> list[Row]:
        return [_build(kind, row) for row in self._db.execute(query, params).fetchall()]


def _column_value(name: str, value: object) -> object:
    if name in _TIME_COLUMNS and isinstance(value, datetime):
        return to_text(value)
    return value


def _opt_text(moment: datetime | None) -> str | None:
    return None if moment is None else to_text(moment)


def _build(kind: type[Row], row: sqlite3.Row) -> Row:
    values = {field.name: row[field.name] for field in fields(kind)}  # type: ignore[arg-type]
    for name in _TIME_COLUMNS & values.keys():
        values[name] = _from_text(values[name])
    return kind(**values)
