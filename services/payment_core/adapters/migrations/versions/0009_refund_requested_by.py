"""Partial refunds: the operator who asked for a refund (RefundPaymentOrderRequest.operator_id).

refunded <= paid per payment and per order is already enforced by the CHECKs refunded_within_amount
(payments) and refunded_within_paid (payment_orders) under relative UPDATEs; a partial refund is
counted the same way, so nothing else is needed in storage.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 16:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN with a constant default: no table copy on PostgreSQL or SQLite.
    op.add_column("refunds", sa.Column("requested_by", sa.String(32), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("refunds") as batch:
        batch.drop_column("requested_by")
