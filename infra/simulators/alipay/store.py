"""The simulator's memory: trades, refunds and notification attempts in one SQLite file.

Plain `sqlite3` on one connection, as in the WeChat Pay simulator: one asyncio process whose
handlers read and write without an `await` in between, so each business step is atomic. The keys
the real gateway keeps unique are constraints here too: out_trade_no, trade_no, and
(out_trade_no, out_request_no), since Alipay's refund request number is unique per trade.
Amounts are integer fen inside; yuan exist only on the wire. Times are fixed-width UTC text.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trades (
    out_trade_no   TEXT PRIMARY KEY,
    trade_no       TEXT NOT NULL UNIQUE,
    product        TEXT NOT NULL,
    subject        TEXT NOT NULL,
    total_fen      INTEGER NOT NULL CHECK (total_fen > 0),
    notify_url     TEXT,
    time_expire    TEXT,
    qr_code        TEXT,
    trade_status   TEXT NOT NULL,
    buyer_user_id  TEXT NOT NULL,
    buyer_logon_id TEXT NOT NULL,
    gmt_create     TEXT NOT NULL,
    gmt_payment    TEXT,
    gmt_close      TEXT,
    traceparent    TEXT
);
CREATE TABLE IF NOT EXISTS refunds (
    out_trade_no   TEXT NOT NULL REFERENCES trades (out_trade_no),
    out_request_no TEXT NOT NULL,
    refund_fen     INTEGER NOT NULL CHECK (refund_fen > 0),
    reason         TEXT,
    status         TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    gmt_refund_pay TEXT,
    traceparent    TEXT,
    PRIMARY KEY (out_trade_no, out_request_no)
);
CREATE TABLE IF NOT EXISTS unscanned (
    out_trade_no   TEXT PRIMARY KEY REFERENCES trades (out_trade_no)
);
CREATE TABLE IF NOT EXISTS notifications (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    notify_id      TEXT NOT NULL,
    out_trade_no   TEXT NOT NULL,
    out_request_no TEXT,
    notify_url     TEXT NOT NULL,
    delivery       INTEGER NOT NULL,
    attempt        INTEGER NOT NULL,
    status_code    INTEGER,
    answer         TEXT,
    error          TEXT,
    sent_at        TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class SimTrade:
    out_trade_no: str
    trade_no: str
    product: str  # FACE_TO_FACE_PAYMENT (precreate QR) | BAR_CODE (alipay.trade.pay)
    subject: str
    total_fen: int
    notify_url: str | None
    time_expire: datetime | None
    qr_code: str | None
    trade_status: str  # WAIT_BUYER_PAY | TRADE_SUCCESS | TRADE_CLOSED | TRADE_FINISHED
    buyer_user_id: str
    buyer_logon_id: str
    gmt_create: datetime
    gmt_payment: datetime | None
    gmt_close: datetime | None
    traceparent: str | None


@dataclass(frozen=True, slots=True)
class SimRefund:
    out_trade_no: str
    out_request_no: str
    refund_fen: int
    reason: str | None
    status: str  # REFUND_SUCCESS | PROCESSING (a refund the gateway has not confirmed yet)
    created_at: datetime
    gmt_refund_pay: datetime | None
    traceparent: str | None


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    notify_id: str
    out_trade_no: str
    out_request_no: str | None
    notify_url: str
    delivery: int  # 2 for the copy a `duplicate` fault sends
    attempt: int  # 1 for the first try of this delivery, then one more per retry
    status_code: int | None
    answer: str | None  # the body the merchant answered (only "success" stops the retries)
    error: str | None
    sent_at: datetime

    @property
    def acknowledged(self) -> bool:
        return self.status_code == 200 and (self.answer or "").strip() == "success"


_TIME_COLUMNS = {
    "time_expire",
    "gmt_create",
    "gmt_payment",
    "gmt_close",
    "created_at",
    "gmt_refund_pay",
    "sent_at",
}
Row = TypeVar("Row")


def to_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


class SimStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add_trade(self, trade: SimTrade) -> None:
        self._insert("trades", trade)

    def trade(self, out_trade_no: str) -> SimTrade | None:
        return self._one(SimTrade, "SELECT * FROM trades WHERE out_trade_no = ?", out_trade_no)

    def trade_by_trade_no(self, trade_no: str) -> SimTrade | None:
        return self._one(SimTrade, "SELECT * FROM trades WHERE trade_no = ?", trade_no)

    def replace_trade(self, trade: SimTrade) -> None:
        self._db.execute(
            "UPDATE trades SET trade_status = ?, gmt_payment = ?, gmt_close = ? WHERE out_trade_no = ?",
            (trade.trade_status, _opt(trade.gmt_payment), _opt(trade.gmt_close), trade.out_trade_no),
        )

    def hold_unscanned(self, out_trade_no: str) -> None:
        """A precreated trade nobody has scanned yet: the gateway does not know it (real Alipay)."""
        self._db.execute("INSERT OR IGNORE INTO unscanned (out_trade_no) VALUES (?)", (out_trade_no,))

    def is_unscanned(self, out_trade_no: str) -> bool:
        query = "SELECT 1 FROM unscanned WHERE out_trade_no = ?"
        return self._db.execute(query, (out_trade_no,)).fetchone() is not None

    def scanned(self, out_trade_no: str) -> None:
        self._db.execute("DELETE FROM unscanned WHERE out_trade_no = ?", (out_trade_no,))

    def add_refund(self, refund: SimRefund) -> None:
        self._insert("refunds", refund)

    def refund(self, out_trade_no: str, out_request_no: str) -> SimRefund | None:
        query = "SELECT * FROM refunds WHERE out_trade_no = ? AND out_request_no = ?"
        return self._one(SimRefund, query, out_trade_no, out_request_no)

    def refunds_of(self, out_trade_no: str) -> list[SimRefund]:
        query = "SELECT * FROM refunds WHERE out_trade_no = ? ORDER BY created_at"
        return self._all(SimRefund, query, out_trade_no)

    def refunds_in_progress(self, out_request_no: str) -> list[SimRefund]:
        query = "SELECT * FROM refunds WHERE out_request_no = ? AND status = 'PROCESSING'"
        return self._all(SimRefund, query, out_request_no)

    def replace_refund(self, refund: SimRefund) -> None:
        self._db.execute(
            "UPDATE refunds SET status = ?, gmt_refund_pay = ? WHERE out_trade_no = ? AND out_request_no = ?",
            (refund.status, _opt(refund.gmt_refund_pay), refund.out_trade_no, refund.out_request_no),
        )

    def all_trades(self) -> list[SimTrade]:
        return self._all(SimTrade, "SELECT * FROM trades ORDER BY gmt_create")

    def all_refunds(self) -> list[SimRefund]:
        return self._all(SimRefund, "SELECT * FROM refunds ORDER BY created_at")

    def trades_paid_between(self, start: datetime, end: datetime) -> list[SimTrade]:
        query = "SELECT * FROM trades WHERE gmt_payment >= ? AND gmt_payment < ? ORDER BY gmt_payment"
        return self._all(SimTrade, query, to_text(start), to_text(end))

    def refunds_paid_between(self, start: datetime, end: datetime) -> list[SimRefund]:
        query = (
            "SELECT * FROM refunds WHERE gmt_refund_pay >= ? AND gmt_refund_pay < ? ORDER BY gmt_refund_pay"
        )
        return self._all(SimRefund, query, to_text(start), to_text(end))

    def record_delivery(self, attempt: DeliveryAttempt) -> None:
        self._insert("notifications", attempt)

    def deliveries(self, out_trade_no: str) -> list[DeliveryAttempt]:
        query = "SELECT * FROM notifications WHERE out_trade_no = ? ORDER BY id"
        return self._all(DeliveryAttempt, query, out_trade_no)

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


def _opt(moment: datetime | None) -> str | None:
    return None if moment is None else to_text(moment)


def _build(kind: type[Row], row: sqlite3.Row) -> Row:
    values = {field.name: row[field.name] for field in fields(kind)}  # type: ignore[arg-type]
    for name in _TIME_COLUMNS & values.keys():
        values[name] = None if values[name] is None else datetime.fromisoformat(values[name])
    return kind(**values)
