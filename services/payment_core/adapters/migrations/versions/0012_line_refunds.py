"""Refunds by lines of an insured order: what left the bill and where its re-settlement stands
(2208 → 2204/2206 of the remaining lines → 2207), and payment_orders.line_refund_count so a load
skips the table for the orders that have none. The freed cash goes back by ordinary refunds, so
refunded <= paid stays enforced by the existing CHECKs.

Revision 0011 is another branch's (deposits/discharge); this one follows 0010 here and is re-pointed
at 0011 when the branches meet.

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-02 18:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "line_refunds",
        sa.Column("line_refund_id", sa.String(40), nullable=False),
        sa.Column("order_id", sa.String(40), nullable=False),
        sa.Column("line_refund_no", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("lines", sa.Text(), nullable=False),
        sa.Column("revoked_settlement_id", sa.String(64), nullable=False),
        sa.Column("new_settlement_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("expected_cash_fen", sa.BigInteger(), nullable=False),
        sa.Column("cash_fen", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("reason", sa.String(256), nullable=False),
        sa.Column("requested_by", sa.String(32), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "cash_fen >= 0 AND expected_cash_fen >= 0", name="ck_line_refunds_amounts_not_negative"
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["payment_orders.order_id"], name="fk_line_refunds_order_id_payment_orders"
        ),
        sa.PrimaryKeyConstraint("line_refund_id", name="pk_line_refunds"),
        sa.UniqueConstraint("order_id", "line_refund_no", name="uq_line_refunds_order_id_line_refund_no"),
    )
    op.create_index("ix_line_refunds_order_id", "line_refunds", ["order_id"])
    # A plain ADD COLUMN with a constant default: no table copy on PostgreSQL or SQLite.
    op.add_column(
        "payment_orders", sa.Column("line_refund_count", sa.Integer(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    with op.batch_alter_table("payment_orders") as batch:
        batch.drop_column("line_refund_count")
    op.drop_index("ix_line_refunds_order_id", table_name="line_refunds")
    op.drop_table("line_refunds")
