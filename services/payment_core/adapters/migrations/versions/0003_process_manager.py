"""payment-core: the order's process manager (expiry, requested close, 2205 done, step clock, due
time, step lease) and excess payments; the resumer's retry columns go.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Plain ADD/DROP COLUMN (PostgreSQL, SQLite >= 3.35): no table copy, so the charge lines,
    # payments and refunds that reference the orders keep their foreign keys intact.
    new_columns: list[sa.Column[Any]] = [
        sa.Column("expires_at", _WHEN, nullable=True),
        sa.Column("close_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("close_reason", sa.String(length=256), nullable=False, server_default=""),
        sa.Column("presettlement_cancelled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_step_at", _WHEN, nullable=True),
        sa.Column("due_at", _WHEN, nullable=True),
        sa.Column("lease_holder", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", _WHEN, nullable=True),
    ]
    for column in new_columns:
        op.add_column("payment_orders", column)
    op.drop_index("ix_payment_orders_status_next_attempt_at", table_name="payment_orders")
    op.drop_column("payment_orders", "settle_attempts")
    op.drop_column("payment_orders", "next_attempt_at")
    # Orders of an earlier release expire when they were created: the janitor closes what is unpaid.
    op.execute("UPDATE payment_orders SET expires_at = created_at, due_at = created_at")
    op.create_index("ix_payment_orders_due_at", "payment_orders", ["due_at"])
    op.add_column("payments", sa.Column("excess", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("payments", "excess")
    op.drop_index("ix_payment_orders_due_at", table_name="payment_orders")
    for column in ("expires_at", "close_requested", "close_reason", "presettlement_cancelled", "attempts",
                   "last_step_at", "due_at", "lease_holder", "lease_expires_at"):  # fmt: skip
        op.drop_column("payment_orders", column)
    op.add_column(
        "payment_orders", sa.Column("settle_attempts", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("payment_orders", sa.Column("next_attempt_at", _WHEN, nullable=True))
    op.create_index(
        "ix_payment_orders_status_next_attempt_at", "payment_orders", ["status", "next_attempt_at"]
    )
