"""The deposit as a channel, deposit refunds and the self-pay discharge.

deposit_uses links a payment from the deposit (CHANNEL_DEPOSIT) to its account: the balance is
debited when it succeeds, credited back by its refunds (refunded <= amount, CHECK). deposit_top_ups
counts what deposit refunds took back from each top-up (refunded <= the top-up, CHECK).
deposit_discharges holds one discharge order per stay. The balance itself stays under the CHECKs of
0010 (never negative, = topped_up - used - refunded).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A new CHECK on SQLite means a table copy (batch); the table is small (one row per top-up).
    with op.batch_alter_table("deposit_top_ups") as batch:
        batch.add_column(sa.Column("refunded_fen", sa.BigInteger(), nullable=False, server_default="0"))
        batch.create_check_constraint(
            "ck_deposit_top_ups_refunded_within_top_up", "refunded_fen >= 0 AND refunded_fen <= amount_fen"
        )
    op.create_table(
        "deposit_uses",
        sa.Column("payment_id", sa.String(40), nullable=False),
        sa.Column("inpatient_no", sa.String(30), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("refunded_fen", sa.BigInteger(), nullable=False, server_default="0"),
        sa.CheckConstraint("amount_fen > 0", name="ck_deposit_uses_amount_positive"),
        sa.CheckConstraint(
            "refunded_fen >= 0 AND refunded_fen <= amount_fen", name="ck_deposit_uses_refunded_within_use"
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.payment_id"], name="fk_deposit_uses_payment_id_payments"
        ),
        sa.ForeignKeyConstraint(
            ["inpatient_no"],
            ["deposit_accounts.inpatient_no"],
            name="fk_deposit_uses_inpatient_no_deposit_accounts",
        ),
        sa.PrimaryKeyConstraint("payment_id", name="pk_deposit_uses"),
    )
    op.create_index("ix_deposit_uses_inpatient_no", "deposit_uses", ["inpatient_no"])
    op.create_table(
        "deposit_discharges",
        sa.Column("inpatient_no", sa.String(30), nullable=False),
        sa.Column("order_id", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["inpatient_no"],
            ["deposit_accounts.inpatient_no"],
            name="fk_deposit_discharges_inpatient_no_deposit_accounts",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["payment_orders.order_id"], name="fk_deposit_discharges_order_id_payment_orders"
        ),
        sa.PrimaryKeyConstraint("inpatient_no", name="pk_deposit_discharges"),
        sa.UniqueConstraint("order_id", name="uq_deposit_discharges_order_id"),
    )


def downgrade() -> None:
    op.drop_table("deposit_discharges")
    op.drop_index("ix_deposit_uses_inpatient_no", table_name="deposit_uses")
    op.drop_table("deposit_uses")
    with op.batch_alter_table("deposit_top_ups") as batch:
        batch.drop_constraint("ck_deposit_top_ups_refunded_within_top_up", type_="check")
        batch.drop_column("refunded_fen")
