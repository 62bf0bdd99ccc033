"""payment_orders.cash_placed_fen and refunds.revokes_settlement: orders paid by several payments.

cash_placed_fen is the cash share an order's payments cover (succeeded and still open attempts),
kept by relative updates under CHECK (0 <= cash_placed_fen <= cash_due_fen), so an order can never
be given more attempts than it owes, whatever two concurrent PayPaymentOrder calls believed.
revokes_settlement marks the one refund of a revoked settlement that takes the insurer's shares back.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 15:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHECK = "ck_payment_orders_cash_placed_within_due"


def upgrade() -> None:
    # A column constraint in a plain ADD COLUMN (PostgreSQL, and SQLite, which checks it against
    # the rows already there): no table copy, so the tables referencing the orders keep their keys.
    op.execute(
        "ALTER TABLE payment_orders ADD COLUMN cash_placed_fen BIGINT DEFAULT 0 NOT NULL "
        f"CONSTRAINT {_CHECK} CHECK (cash_placed_fen >= 0 AND cash_placed_fen <= cash_due_fen)"
    )
    # Orders of an earlier release had one attempt at a time: what it covers is what they hold.
    op.execute(
        "UPDATE payment_orders SET cash_placed_fen = COALESCE(("
        " SELECT SUM(p.amount_fen) FROM payments p WHERE p.order_id = payment_orders.order_id"
        " AND NOT p.excess AND p.status IN ('PENDING', 'UNKNOWN', 'SUCCEEDED')), 0)"
    )

    # The refund a 2208 was recorded on. Before this release an order had one refund to revoke with,
    # so every requested refund of an insured, settled order was it (what the export assumed).
    op.add_column(
        "refunds", sa.Column("revokes_settlement", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.execute(
        "UPDATE refunds SET revokes_settlement = TRUE WHERE kind = 'REQUESTED' AND order_id IN ("
        " SELECT order_id FROM payment_orders WHERE insured AND setl_id <> '')"
    )


def downgrade() -> None:
    op.drop_column("refunds", "revokes_settlement")
    op.drop_column("payment_orders", "cash_placed_fen")
