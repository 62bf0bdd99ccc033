"""data-aggregation's own tables: the facts (money in BIGINT fen), every ingested event id, and one
durable cursor per source feed. Uniqueness is what makes ingest exactly-once."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

from services.runtime.db import UtcDateTime, add_runtime_tables

metadata = MetaData()
# The outbox stays empty (this service publishes nothing); the runtime's database object expects it.
add_runtime_tables(metadata)

feed_cursors = Table(
    "feed_cursors",
    metadata,
    Column("source_service", String(40), primary_key=True),
    # The last feed sequence ingested; moves forward only, in the same transaction as the facts.
    Column("cursor", BigInteger, nullable=False),
    Column("events_ingested", BigInteger, nullable=False),
    Column("head_sequence", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# One row per event ever ingested: a replayed or duplicated event finds its id here and does nothing.
ingested_events = Table(
    "ingested_events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("source_service", String(40), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("ingested_at", UtcDateTime(), nullable=False),
)

settled_orders = Table(
    "settled_orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("scene", String(32), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("campus_code", String(32), nullable=False),
    Column("dept_code", String(32), nullable=False),
    Column("insutype", String(16), nullable=False),
    Column("total_fen", BigInteger, nullable=False),
    Column("fund_fen", BigInteger, nullable=False),
    Column("personal_account_fen", BigInteger, nullable=False),
    Column("cash_fen", BigInteger, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("settled_at", UtcDateTime(), nullable=False),
    Column("settle_ms", BigInteger, nullable=False),
    Column("business_date", Date, nullable=False),
    Index("ix_settled_orders_business_date", "business_date"),
)

order_refunds = Table(
    "order_refunds",
    metadata,
    Column("refund_id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("cash_fen", BigInteger, nullable=False),
    Column("fund_fen", BigInteger, nullable=False),
    Column("personal_account_fen", BigInteger, nullable=False),
    Column("business_date", Date, nullable=False),
    Index("ix_order_refunds_business_date", "business_date"),
)

insurance_settlements = Table(
    "insurance_settlements",
    metadata,
    Column("settlement_id", String(64), primary_key=True),
    Column("setl_id", String(64), nullable=False),
    Column("order_ref", String(64), nullable=False),
    Column("insutype", String(16), nullable=False),
    Column("med_type", String(16), nullable=False),
    Column("medfee_fen", BigInteger, nullable=False),
    Column("fund_fen", BigInteger, nullable=False),
    Column("personal_account_fen", BigInteger, nullable=False),
    Column("cash_fen", BigInteger, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

reconciliation_runs = Table(
    "reconciliation_runs",
    metadata,
    Column("run_id", String(40), primary_key=True),
    Column("business_date", Date, nullable=False),
    Column("matched_count", Integer, nullable=False),
    Column("discrepancy_count", Integer, nullable=False),
)
