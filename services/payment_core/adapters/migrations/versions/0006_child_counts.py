"""payment_orders.payment_count / refund_count: how many payments and refunds an order has, so
loading an order skips the SELECT of children it does not have (most loads: no refunds; a new
order: no payments either).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 15:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # ADD COLUMN with a constant default: no table copy on PostgreSQL (11+) or SQLite.
    op.add_column(
        "payment_orders", sa.Column("payment_count", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column(
        "payment_orders", sa.Column("refund_count", sa.Integer(), nullable=False, server_default="0")
    )
    op.execute(
        "UPDATE payment_orders SET"
        " payment_count = (SELECT count(*) FROM payments p WHERE p.order_id = payment_orders.order_id),"
        " refund_count = (SELECT count(*) FROM refunds r WHERE r.order_id = payment_orders.order_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("payment_orders") as batch:
        batch.drop_column("refund_count")
        batch.drop_column("payment_count")
