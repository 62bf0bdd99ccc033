"""runs are jobs under a lease

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 07:36:56.501069

A RUNNING run gets its holder, lease, attempt count and last error; at most one RUNNING run per
business day. Runs left RUNNING by the builds before this one have no holder to take them over (their
process died mid-run), so they end FAILED with that reason first: the unique index needs it, and a
run must never stay RUNNING forever.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RUNNING = sa.text("status = 'RUNNING'")
_LEGACY_REASON = "interrupted: the process executing it stopped before runs were resumable jobs"


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE reconciliation_runs SET status = 'FAILED', failure_reason = :reason,"
            " finished_at = CURRENT_TIMESTAMP WHERE status = 'RUNNING'"
        ).bindparams(reason=_LEGACY_REASON)
    )
    with op.batch_alter_table("reconciliation_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("holder", sa.String(length=80), server_default="", nullable=False))
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("last_error", sa.Text(), server_default="", nullable=False))
        batch_op.create_index(
            "ix_reconciliation_runs_running_leases",
            ["lease_expires_at"],
            unique=False,
            sqlite_where=_RUNNING,
            postgresql_where=_RUNNING,
        )
        batch_op.create_index(
            "uq_reconciliation_runs_running_day",
            ["business_date"],
            unique=True,
            sqlite_where=_RUNNING,
            postgresql_where=_RUNNING,
        )


def downgrade() -> None:
    with op.batch_alter_table("reconciliation_runs", schema=None) as batch_op:
        for index in ("uq_reconciliation_runs_running_day", "ix_reconciliation_runs_running_leases"):
            batch_op.drop_index(index, sqlite_where=_RUNNING, postgresql_where=_RUNNING)
        batch_op.drop_column("last_error")
        batch_op.drop_column("attempts")
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("holder")
