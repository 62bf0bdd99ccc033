"""insurance-adapter tables (SQLAlchemy Core). Money is BIGINT fen in *_fen columns.

Invariants the database enforces: one active settlement per order_ref (a partial unique index, so a
cancelled or failed one frees the order for a new pre-settlement); one settlement per 2207 msgid;
a settled or revoked settlement always has its setl_id; amounts on charge lines are positive.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from services.insurance_adapter.domain.settlement import (
    ACTIVE_STATUSES,
    SettlementBreakdown,
    SettlementStatus,
)
from services.runtime.db import BigId, UtcDateTime, add_runtime_tables

metadata = MetaData()
add_runtime_tables(metadata)

_STATUSES = ", ".join(f"'{status.value}'" for status in SettlementStatus)
_ACTIVE = text("status IN (" + ", ".join(f"'{status.value}'" for status in sorted(ACTIVE_STATUSES)) + ")")

settlements = Table(
    "settlements",
    metadata,
    Column("settlement_id", String(40), primary_key=True),
    Column("order_ref", String(64), nullable=False),
    Column("status", String(20), nullable=False),
    Column("bill_fingerprint", String(64), nullable=False),
    Column("psn_no", String(30), nullable=False),
    Column("insutype", String(6), nullable=False),
    Column("med_type", String(6), nullable=False),
    Column("insuplc_admdvs", String(6), nullable=False),
    Column("mdtrt_cert_type", String(3), nullable=False),
    # Sensitive: 2206/2207 must send it again. Only ever read back into a PatientIdentifier.
    Column("mdtrt_cert_no", String(64), nullable=False),
    Column("visit_no", String(30), nullable=False),
    Column("use_personal_account", Boolean, nullable=False),
    Column("mdtrt_id", String(30), nullable=False),
    Column("chrg_bchno", String(30), nullable=False, server_default=""),
    Column("setl_id", String(30), nullable=False, server_default=""),
    # The 2207 msgid, recorded before the message is sent (NULL until then).
    Column("settle_msgid", String(30), nullable=True, unique=True),
    Column("invoice_no", String(20), nullable=False, server_default=""),
    Column("status_reason", String(200), nullable=False, server_default=""),
    # The 5203 queries since the last 2207 that did not decide it, and what the latest said.
    Column("undecided_queries", Integer, nullable=False, server_default="0"),
    Column("last_query", String(12), nullable=False, server_default=""),
    *(Column(f"{name}_fen", BigInteger, nullable=True) for name in SettlementBreakdown.field_names()),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("presettled_at", UtcDateTime(), nullable=True),
    Column("settled_at", UtcDateTime(), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Column("last_queried_at", UtcDateTime(), nullable=True),
    CheckConstraint(f"status IN ({_STATUSES})", name="ck_settlements_status"),
    CheckConstraint(
        "status NOT IN ('SETTLED', 'REVOKED') OR (setl_id <> '' AND settled_at IS NOT NULL)",
        name="ck_settlements_settled_has_setl_id",
    ),
    Index(
        "uq_settlements_active_order_ref",
        "order_ref",
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    ),
    Index("ix_settlements_created_at", "created_at"),
    Index("ix_settlements_settled_at", "settled_at"),
    Index("ix_settlements_revoked_at", "revoked_at"),
)

charge_lines = Table(
    "charge_lines",
    metadata,
    Column("settlement_id", String(40), ForeignKey("settlements.settlement_id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("line_no", String(30), nullable=False),
    Column("hospital_code", String(150), nullable=False),
    Column("national_code", String(50), nullable=False),
    Column("name", String(200), nullable=False),
    Column("chrgitm_lv", String(3), nullable=False),
    Column("med_chrgitm_type", String(6), nullable=False),
    Column("quantity_ten_thousandths", BigInteger, nullable=False),
    Column("unit_price_fen", BigInteger, nullable=False),
    Column("line_total_fen", BigInteger, nullable=False),
    Column("dept_code", String(30), nullable=False),
    Column("doctor_code", String(30), nullable=False),
    CheckConstraint("line_total_fen > 0 AND unit_price_fen >= 0", name="ck_charge_lines_amounts"),
)

# What Presettle needs to continue from a recovery point, beside the lines (one row per settlement).
visit_details = Table(
    "visit_details",
    metadata,
    Column("settlement_id", String(40), ForeignKey("settlements.settlement_id"), primary_key=True),
    Column("dept_code", String(30), nullable=False),
    Column("dept_name", String(100), nullable=False),
    Column("doctor_code", String(30), nullable=False),
    Column("doctor_name", String(50), nullable=False),
    Column("dise_codg", String(30), nullable=False),
    Column("dise_name", String(300), nullable=False),
)

insurer_messages = Table(
    "insurer_messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("msgid", String(30), nullable=False),
    Column("infno", String(6), nullable=False),
    Column("outcome", String(12), nullable=False),
    # Masked before they are written: never a clear certno, name or voucher number.
    Column("request_json", Text, nullable=False),
    Column("response_json", Text, nullable=False),
    Column("elapsed_ms", BigInteger, nullable=False),
    Column("sent_at", UtcDateTime(), nullable=False),
    Column("order_ref", String(64), nullable=False, server_default=""),
    Index("ix_insurer_messages_infno", "infno"),
    Index("ix_insurer_messages_order_ref", "order_ref"),
)

_TOTALS = ("medfee_sumamt", "fund_pay_sumamt", "acct_pay")

totals_statements = Table(
    "totals_statements",
    metadata,
    Column("statement_id", String(40), primary_key=True),
    Column("business_date", String(10), nullable=False),
    Column("insutype", String(6), nullable=False),
    Column("clr_type", String(6), nullable=False),
    Column("setl_optins", String(6), nullable=False),
    *(Column(f"{name}_fen", BigInteger, nullable=False) for name in _TOTALS),
    Column("settlement_count", Integer, nullable=False),
    Column("stmt_rslt", String(6), nullable=False),
    Column("stmt_rslt_dscr", String(200), nullable=False),
    # The insurer's own totals, when its answer carries them.
    *(Column(f"insurer_{name}_fen", BigInteger, nullable=True) for name in _TOTALS),
    Column("insurer_settlement_count", Integer, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_totals_statements_day", "business_date", "insutype"),
)
