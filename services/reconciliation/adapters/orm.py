"""reconciliation's own tables. Money in BIGINT fen; classes and statuses constrained in storage."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from services.reconciliation.domain.model import DiscrepancyClass, DiscrepancyStatus, RunStatus
from services.runtime.db import UtcDateTime, add_runtime_tables

metadata = MetaData()
add_runtime_tables(metadata)


def _one_of(column: str, values: type[RunStatus] | type[DiscrepancyClass] | type[DiscrepancyStatus]) -> str:
    return f"{column} IN ({', '.join(repr(member.value) for member in values)})"


_RUNNING = text("status = 'RUNNING'")

# A RUNNING run is a job under a lease: `holder` (a process id) executes it until
# `lease_expires_at`, renewing it as it works. At most one RUNNING run per business day (a partial
# unique index), so a second request for the day joins the running one instead of racing it.
reconciliation_runs = Table(
    "reconciliation_runs",
    metadata,
    Column("run_id", String(40), primary_key=True),
    Column("business_date", Date, nullable=False),
    Column("status", String(16), nullable=False),
    Column("matched_count", Integer, nullable=False, default=0),
    Column("discrepancy_count", Integer, nullable=False, default=0),
    Column("failure_reason", Text, nullable=False, default=""),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime(), nullable=True),
    Column("holder", String(80), nullable=False, server_default=""),
    Column("lease_expires_at", UtcDateTime(), nullable=True),
    Column("attempts", Integer, nullable=False, server_default="1"),
    Column("last_error", Text, nullable=False, server_default=""),
    CheckConstraint(_one_of("status", RunStatus), name="ck_reconciliation_runs_status"),
    Index("ix_reconciliation_runs_newest", "started_at", "run_id"),
    Index("ix_reconciliation_runs_business_date", "business_date"),
    Index(
        "uq_reconciliation_runs_running_day",
        "business_date",
        unique=True,
        sqlite_where=_RUNNING,
        postgresql_where=_RUNNING,
    ),
    # What the takeover sweep reads every few seconds: RUNNING runs by lease expiry.
    Index(
        "ix_reconciliation_runs_running_leases",
        "lease_expires_at",
        sqlite_where=_RUNNING,
        postgresql_where=_RUNNING,
    ),
)

# One row per source a run read: what moved on that source for the day.
run_source_totals = Table(
    "run_source_totals",
    metadata,
    Column("run_id", String(40), ForeignKey("reconciliation_runs.run_id"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("source", String(40), nullable=False),
    Column("payment_count", Integer, nullable=False),
    Column("payment_fen", BigInteger, nullable=False),
    Column("refund_count", Integer, nullable=False),
    Column("refund_fen", BigInteger, nullable=False),
    PrimaryKeyConstraint("run_id", "position"),
    UniqueConstraint("run_id", "source", name="uq_run_source_totals_source"),
)

discrepancies = Table(
    "discrepancies",
    metadata,
    Column("discrepancy_id", String(40), primary_key=True),
    Column("run_id", String(40), ForeignKey("reconciliation_runs.run_id"), nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("discrepancy_class", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("source", String(40), nullable=False),
    Column("out_trade_no", String(64), nullable=False, default=""),
    Column("out_refund_no", String(64), nullable=False, default=""),
    Column("order_id", String(64), nullable=False, default=""),
    Column("platform_amount_fen", BigInteger, nullable=False),
    Column("source_amount_fen", BigInteger, nullable=False),
    Column("evidence", Text, nullable=False),
    Column("found_at", UtcDateTime(), nullable=False),
    UniqueConstraint("run_id", "ordinal", name="uq_discrepancies_run_ordinal"),
    CheckConstraint(_one_of("discrepancy_class", DiscrepancyClass), name="ck_discrepancies_class"),
    CheckConstraint(_one_of("status", DiscrepancyStatus), name="ck_discrepancies_status"),
)
