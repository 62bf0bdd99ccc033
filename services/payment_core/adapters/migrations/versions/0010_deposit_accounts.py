"""Inpatient deposits (预交金): the deposit accounts and which payment order carries each top-up.

The balance moves only by relative UPDATEs under CHECK balance_fen >= 0, so storage never holds a
negative deposit; CHECK balance_is_movements keeps balance = topped_up - used - refunded.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 16:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deposit_accounts",
        sa.Column("inpatient_no", sa.String(30), nullable=False),
        sa.Column("campus_code", sa.String(32), nullable=False),
        sa.Column("his_patient_id", sa.String(64), nullable=False),
        sa.Column("balance_fen", sa.BigInteger(), nullable=False),
        sa.Column("topped_up_fen", sa.BigInteger(), nullable=False),
        sa.Column("used_fen", sa.BigInteger(), nullable=False),
        sa.Column("refunded_fen", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("balance_fen >= 0", name="ck_deposit_accounts_balance_not_negative"),
        sa.CheckConstraint(
            "balance_fen = topped_up_fen - used_fen - refunded_fen",
            name="ck_deposit_accounts_balance_is_movements",
        ),
        sa.PrimaryKeyConstraint("inpatient_no", name="pk_deposit_accounts"),
    )
    op.create_table(
        "deposit_top_ups",
        sa.Column("order_id", sa.String(40), nullable=False),
        sa.Column("inpatient_no", sa.String(30), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount_fen > 0", name="ck_deposit_top_ups_amount_positive"),
        sa.ForeignKeyConstraint(
            ["order_id"], ["payment_orders.order_id"], name="fk_deposit_top_ups_order_id_payment_orders"
        ),
        sa.ForeignKeyConstraint(
            ["inpatient_no"],
            ["deposit_accounts.inpatient_no"],
            name="fk_deposit_top_ups_inpatient_no_deposit_accounts",
        ),
        sa.PrimaryKeyConstraint("order_id", name="pk_deposit_top_ups"),
    )
    op.create_index("ix_deposit_top_ups_inpatient_no", "deposit_top_ups", ["inpatient_no"])


def downgrade() -> None:
    op.drop_index("ix_deposit_top_ups_inpatient_no", table_name="deposit_top_ups")
    op.drop_table("deposit_top_ups")
    op.drop_table("deposit_accounts")
