"""why a mapping left a message unmapped, and how often (events, outbox, activity_counts)

Revision ID: 0016_mapping_errors
Revises: 0015_identity
Create Date: 2026-12-07 18:00:00

- `events.mapping_error`, `outbox.mapping_error`: null, or why the environment's mapping failed
  on the message, which was stored (inbound) or queued for Segment (outbound) unmapped.
- `activity_counts.mapping_failed_inbound`, `mapping_failed_outbound`: how many such messages,
  per environment and minute. Outside the ledger's sums: each was still stored or accepted.
New columns only: on Citus they reach the shards by themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_mapping_errors"
down_revision: str | None = "0015_identity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTS = ("mapping_failed_inbound", "mapping_failed_outbound")


def upgrade() -> None:
    op.add_column("events", sa.Column("mapping_error", sa.Text(), nullable=True))
    op.add_column("outbox", sa.Column("mapping_error", sa.Text(), nullable=True))
    for column in COUNTS:
        op.add_column(
            "activity_counts",
            sa.Column(column, sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        )


def downgrade() -> None:
    for column in COUNTS:
        op.drop_column("activity_counts", column)
    op.drop_column("outbox", "mapping_error")
    op.drop_column("events", "mapping_error")
