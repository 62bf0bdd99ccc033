"""charge_lines.quantity_milli_units -> quantity_ten_thousandths: the column always held
ten-thousandths of a unit (NHSA cnt is 16,4), as ChargeItem's renamed field now says.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 08:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain RENAME COLUMN on PostgreSQL and SQLite (>= 3.25): no table copy, the stored
    # quantities and the table's constraints stay as they are.
    op.alter_column("charge_lines", "quantity_milli_units", new_column_name="quantity_ten_thousandths")


def downgrade() -> None:
    op.alter_column("charge_lines", "quantity_ten_thousandths", new_column_name="quantity_milli_units")
