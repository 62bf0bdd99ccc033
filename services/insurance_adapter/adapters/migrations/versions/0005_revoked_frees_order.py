"""a revoked settlement frees its order_ref: what remains of a partly refunded bill is pre-settled
again under the same order (the one-active-settlement index no longer counts REVOKED)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 18:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = sa.text(
    "status IN ('FEES_UPLOADED', 'PRESETTLED', 'REVOKED', 'SETTLED', 'SETTLING', 'UNKNOWN', "
    "'VISIT_REGISTERED')"
)
_AFTER = sa.text(
    "status IN ('FEES_UPLOADED', 'PRESETTLED', 'SETTLED', 'SETTLING', 'UNKNOWN', 'VISIT_REGISTERED')"
)
_INDEX = "uq_settlements_active_order_ref"


def _replace(old: sa.TextClause, new: sa.TextClause) -> None:
    with op.batch_alter_table("settlements") as batch_op:
        batch_op.drop_index(_INDEX, sqlite_where=old, postgresql_where=old)
        batch_op.create_index(_INDEX, ["order_ref"], unique=True, sqlite_where=new, postgresql_where=new)


def upgrade() -> None:
    _replace(_BEFORE, _AFTER)


def downgrade() -> None:
    _replace(_AFTER, _BEFORE)
