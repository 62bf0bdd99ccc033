"""settlement queries: the 5203s since the last 2207 that did not decide it, which pace the next

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("settlements") as batch_op:
        batch_op.add_column(sa.Column("undecided_queries", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("last_query", sa.String(length=12), server_default="", nullable=False))
        batch_op.add_column(sa.Column("last_queried_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("settlements") as batch_op:
        batch_op.drop_column("last_queried_at")
        batch_op.drop_column("last_query")
        batch_op.drop_column("undecided_queries")
