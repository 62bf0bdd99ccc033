"""Cashier shift close-out (收费员日结): the operator and the campus on the ledger, and the closed
shifts with their totals and the postings each counted.

Why on the ledger rather than joined through payments and refunds: a settlement transaction is per
order (its clearing posting is the order's kept cash of a channel, net of refunds made before it
settled), so the ledger and the payment rows do not line up one to one; a join would have to
guess which payment a posting stands for. The posting itself says whose money it is
(`ledger_postings.operator_id`, set from the payment's or refund's operator when it is posted) and
its transaction says where (`ledger_transactions.campus_code`), so a shift's totals are read from
the ledger alone, by `domain.shift.shift_totals`. Postings made before this revision carry "" and
belong to no cashier's shift; the campus is filled in from their orders.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column(
        "ledger_transactions", sa.Column("campus_code", sa.String(32), nullable=False, server_default="")
    )
    same_order = "payment_orders.order_id = ledger_transactions.order_id"
    op.execute(
        "UPDATE ledger_transactions SET campus_code ="
        f" (SELECT campus_code FROM payment_orders WHERE {same_order})"
        f" WHERE EXISTS (SELECT 1 FROM payment_orders WHERE {same_order})"
    )
    op.add_column(
        "ledger_postings", sa.Column("operator_id", sa.String(32), nullable=False, server_default="")
    )
    op.create_index("ix_ledger_postings_operator_id_account", "ledger_postings", ["operator_id", "account"])
    op.create_table(
        "cashier_shifts",
        sa.Column("shift_id", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("cashier_id", sa.String(length=32), nullable=False),
        sa.Column("campus_code", sa.String(length=32), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("shift_id", name=op.f("pk_cashier_shifts")),
        sa.UniqueConstraint(
            "cashier_id", "campus_code", "closed_at",
            name=op.f("uq_cashier_shifts_cashier_id_campus_code_closed_at"),
        ),
    )  # fmt: skip
    op.create_table(
        "cashier_shift_totals",
        sa.Column("shift_id", sa.String(length=40), nullable=False),
        sa.Column("channel", sa.String(length=24), nullable=False),
        sa.Column("payment_count", sa.Integer(), nullable=False),
        sa.Column("collected_fen", sa.BigInteger(), nullable=False),
        sa.Column("refund_count", sa.Integer(), nullable=False),
        sa.Column("refunded_fen", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["shift_id"], ["cashier_shifts.shift_id"],
            name=op.f("fk_cashier_shift_totals_shift_id_cashier_shifts"),
        ),
        sa.PrimaryKeyConstraint("shift_id", "channel", name=op.f("pk_cashier_shift_totals")),
    )  # fmt: skip
    op.create_table(
        "cashier_shift_postings",
        sa.Column("posting_id", _ID, nullable=False),
        sa.Column("shift_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["posting_id"], ["ledger_postings.id"],
            name=op.f("fk_cashier_shift_postings_posting_id_ledger_postings"),
        ),
        sa.ForeignKeyConstraint(
            ["shift_id"], ["cashier_shifts.shift_id"],
            name=op.f("fk_cashier_shift_postings_shift_id_cashier_shifts"),
        ),
        sa.PrimaryKeyConstraint("posting_id", name=op.f("pk_cashier_shift_postings")),
    )  # fmt: skip
    op.create_index("ix_cashier_shift_postings_shift_id", "cashier_shift_postings", ["shift_id"])


def downgrade() -> None:
    op.drop_index("ix_cashier_shift_postings_shift_id", table_name="cashier_shift_postings")
    op.drop_table("cashier_shift_postings")
    op.drop_table("cashier_shift_totals")
    op.drop_table("cashier_shifts")
    op.drop_index("ix_ledger_postings_operator_id_account", table_name="ledger_postings")
    with op.batch_alter_table("ledger_postings") as batch:
        batch.drop_column("operator_id")
    with op.batch_alter_table("ledger_transactions") as batch:
        batch.drop_column("campus_code")
