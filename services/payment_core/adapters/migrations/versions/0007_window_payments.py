"""Window payments (CASH, POS): the cashier's operator id on payments and refunds, the POS
terminal's slip on payments, and one payment per terminal transaction: a unique index on
(pos_terminal_id, pos_batch_no, pos_reference_no), NULL for every payment that is not POS (NULLs
are distinct on PostgreSQL and SQLite, so they never collide).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SLIP = "ix_payments_pos_terminal_id_pos_batch_no_pos_reference_no"


def upgrade() -> None:
    # Plain ADD COLUMNs (constant defaults or NULL): no table copy on PostgreSQL or SQLite.
    op.add_column("payments", sa.Column("operator_id", sa.String(32), nullable=False, server_default=""))
    op.add_column("payments", sa.Column("pos_terminal_id", sa.String(16), nullable=True))
    op.add_column("payments", sa.Column("pos_batch_no", sa.String(6), nullable=True))
    op.add_column("payments", sa.Column("pos_reference_no", sa.String(20), nullable=True))
    op.add_column("payments", sa.Column("masked_card_no", sa.String(19), nullable=False, server_default=""))
    # A unique index rather than a table constraint: SQLite adds it without rebuilding the table.
    op.create_index(_SLIP, "payments", ["pos_terminal_id", "pos_batch_no", "pos_reference_no"], unique=True)
    op.add_column("refunds", sa.Column("operator_id", sa.String(32), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_index(_SLIP, table_name="payments")
    with op.batch_alter_table("refunds") as batch:
        batch.drop_column("operator_id")
    with op.batch_alter_table("payments") as batch:
        for column in (
            "masked_card_no",
            "pos_reference_no",
            "pos_batch_no",
            "pos_terminal_id",
            "operator_id",
        ):
            batch.drop_column(column)
