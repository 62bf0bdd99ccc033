"""The insurer's own records, in its own SQLite file. Amounts are BIGINT fen.

Settlements are append-only: a revocation (2208, or 2601 of a 2207) is a new offsetting row with
negated amounts, and the original only gains a pointer to it (`revoked_by`).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

persons = Table(
    "persons",
    metadata,
    Column("psn_no", String(30), primary_key=True),
    Column("certno", String(50), nullable=False, unique=True),
    Column("psn_cert_type", String(6), nullable=False),
    Column("psn_name", String(50), nullable=False),
    Column("gend", String(1), nullable=False),
    Column("naty", String(3), nullable=False),
    Column("brdy", Date, nullable=False),
    Column("insutype", String(6), nullable=False),
    Column("psn_type", String(6), nullable=False),
    Column("insuplc_admdvs", String(6), nullable=False),
    Column("emp_name", String(200), nullable=False),
    Column("psn_insu_date", Date, nullable=False),
    Column("ecert_token", String(64), nullable=False, unique=True),
    Column("card_sn", String(32), nullable=False),
    Column("acct_balance_fen", BigInteger, nullable=False),
)

accumulators = Table(
    "accumulators",
    metadata,
    Column("psn_no", String(30), ForeignKey("persons.psn_no"), primary_key=True),
    Column("year", Integer, primary_key=True),
    Column("insutype", String(6), primary_key=True),
    Column("deductible_paid_fen", BigInteger, nullable=False, default=0),
    Column("fund_paid_fen", BigInteger, nullable=False, default=0),
)

visits = Table(
    "visits",
    metadata,
    Column("mdtrt_id", String(30), primary_key=True),
    Column("psn_no", String(30), ForeignKey("persons.psn_no"), nullable=False),
    Column("insutype", String(6), nullable=False),
    Column("ipt_otp_no", String(30), nullable=False),
    Column("begntime", String(19), nullable=False),
    Column("mdtrt_cert_type", String(3), nullable=False),
    Column("dept_code", String(30), nullable=False),
    Column("status", String(12), nullable=False),  # registered / cancelled
    UniqueConstraint("psn_no", "ipt_otp_no"),
)

fee_details = Table(
    "fee_details",
    metadata,
    Column("mdtrt_id", String(30), ForeignKey("visits.mdtrt_id"), primary_key=True),
    Column("feedetl_sn", String(30), primary_key=True),
    Column("chrg_bchno", String(30), nullable=False),
    Column("msgid", String(30), nullable=False),
    Column("med_list_codg", String(50), nullable=False),
    Column("medins_list_codg", String(150), nullable=False),
    Column("cnt", String(20), nullable=False),
    Column("pric", String(24), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("chrgitm_lv", String(3), nullable=False),
    Column("med_chrgitm_type", String(6), nullable=False),
    Column("selfpay_prop", String(8), nullable=False),
    Column("price_cap_fen", BigInteger),
    Column("fulamt_ownpay_fen", BigInteger, nullable=False),
    Column("overlmt_fen", BigInteger, nullable=False),
    Column("preselfpay_fen", BigInteger, nullable=False),
    Column("inscp_scp_fen", BigInteger, nullable=False),
)

# The amounts of a settlement as the policy computes them, then the cap remaining before it.
SPLIT_AMOUNTS = (
    "medfee_sumamt",
    "fulamt_ownpay_amt",
    "overlmt_selfpay",
    "preselfpay_amt",
    "inscp_scp_amt",
    "act_pay_dedc",
    "hifp_pay",
    "fund_pay_sumamt",
    "psn_part_amt",
    "acct_pay",
    "psn_cash_pay",
    "hosp_part_amt",
    "balc",
)
AMOUNT_COLUMNS = (*SPLIT_AMOUNTS, "crt_payb_lmt_amt")

settlements = Table(
    "settlements",
    metadata,
    Column("setl_id", String(30), primary_key=True),
    Column("kind", String(8), nullable=False),  # settle / revoke
    Column("msgid", String(30), nullable=False, unique=True),  # = medins_setl_id
    Column("fixmedins_code", String(30), nullable=False),
    Column("mdtrt_id", String(30), ForeignKey("visits.mdtrt_id"), nullable=False),
    Column("chrg_bchno", String(30), nullable=False),
    Column("psn_no", String(30), ForeignKey("persons.psn_no"), nullable=False),
    Column("insutype", String(6), nullable=False),
    Column("psn_type", String(6), nullable=False),
    Column("med_type", String(6), nullable=False),
    Column("mdtrt_cert_type", String(3), nullable=False),
    Column("invono", String(20), nullable=False),
    Column("setl_time", String(19), nullable=False),  # Beijing time
    Column("setl_date", String(10), nullable=False, index=True),  # Beijing date, for 3201
    Column("clr_optins", String(6), nullable=False),
    Column("clr_type", String(6), nullable=False),
    Column("clr_way", String(6), nullable=False),
    Column("fund_pay_type", String(6), nullable=False),
    Column("pool_prop_selfpay", String(8), nullable=False),
    *(Column(f"{name}_fen", BigInteger, nullable=False) for name in AMOUNT_COLUMNS),
    Column("original_setl_id", String(30), ForeignKey("settlements.setl_id")),
    Column("revoked_by", String(30)),
    Index("ix_settlements_batch", "mdtrt_id", "chrg_bchno"),
)

sign_ins = Table(
    "sign_ins",
    metadata,
    Column("sign_no", String(30), primary_key=True),
    Column("fixmedins_code", String(30), nullable=False),
    Column("opter_no", String(30), nullable=False),
    Column("signed_in_at", BigInteger, nullable=False),  # unix seconds
    Column("signed_out", Boolean, nullable=False, default=False),
)

# Every successful mutating message, for replay by msgid and for 2601 reversal by omsgid.
messages = Table(
    "messages",
    metadata,
    Column("msgid", String(30), primary_key=True),
    Column("infno", String(6), nullable=False),
    Column("fixmedins_code", String(30), nullable=False),
    Column("effect", String(2000), nullable=False),  # what it created: setl_id, mdtrt_id, feedetl_sns
    Column("response", Text, nullable=False),
    Column("reversed", Boolean, nullable=False, default=False),
)

counters = Table(
    "counters",
    metadata,
    Column("name", String(30), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
