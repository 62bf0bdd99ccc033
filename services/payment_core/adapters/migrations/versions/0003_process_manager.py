"""payment-core: the order's process manager (expiry, requested close, 2205 done, step clock, due
time, step lease) and excess payments; the resumer's retry columns go.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("payment_orders") as table:
        table.add_column(sa.Column("expires_at", _WHEN, nullable=True))
        table.add_column(
            sa.Column("close_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        table.add_column(sa.Column("close_reason", sa.String(length=256), nullable=False, server_default=""))
        table.add_column(
            sa.Column("presettlement_cancelled", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        table.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        table.add_column(sa.Column("last_step_at", _WHEN, nullable=True))
        table.add_column(sa.Column("due_at", _WHEN, nullable=True))
        table.add_column(sa.Column("lease_holder", sa.String(length=64), nullable=True))
        table.add_column(sa.Column("lease_expires_at", _WHEN, nullable=True))
        table.drop_index("ix_payment_orders_status_next_attempt_at")
        table.drop_column("settle_attempts")
        table.drop_column("next_attempt_at")
    # Orders of an earlier release expire when they were created: the janitor closes what is unpaid.
    op.execute("UPDATE payment_orders SET expires_at = created_at, due_at = created_at")
    with op.batch_alter_table("payment_orders") as table:
        table.alter_column("expires_at", existing_type=_WHEN, nullable=False)
        table.create_index("ix_payment_orders_due_at", ["due_at"])
    with op.batch_alter_table("payments") as table:
        table.add_column(sa.Column("excess", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("payments") as table:
        table.drop_column("excess")
    with op.batch_alter_table("payment_orders") as table:
        table.drop_index("ix_payment_orders_due_at")
        for column in ("expires_at", "close_requested", "close_reason", "presettlement_cancelled", "attempts",
                       "last_step_at", "due_at", "lease_holder", "lease_expires_at"):  # fmt: skip
            table.drop_column(column)
        table.add_column(sa.Column("settle_attempts", sa.Integer(), nullable=False, server_default="0"))
        table.add_column(sa.Column("next_attempt_at", _WHEN, nullable=True))
        table.create_index("ix_payment_orders_status_next_attempt_at", ["status", "next_attempt_at"])
