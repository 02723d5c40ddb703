"""the ledger counts messages a tracking plan held in quarantine

Revision ID: 0017_plan_ledger
Revises: 0016_mapping_errors
Create Date: 2026-12-07 18:00:00

`activity_counts.quarantined`: inbound messages received and held whole by the tracking plan
(neither stored nor refused), so that received = stored + duplicates + refused + quarantined.
Written by the webhook's group commit with the other inbound counts; a release moves its
message from `quarantined` to `stored` (or `duplicates`) in the minute it was received, so
every window keeps summing exactly. The outbound side needs no column: a held outbound message
is counted from the `quarantine` table itself (integration/outbound/outbox.py, LEDGER).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_plan_ledger"
down_revision: str | None = "0016_mapping_errors"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "activity_counts",
        sa.Column("quarantined", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("activity_counts", "quarantined")
