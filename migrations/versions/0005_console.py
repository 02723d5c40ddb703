"""indexes the console's pages are served from

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 04:00:00

- outbox (environment_id, delivered_at) for delivered rows: the last delivered batches of one
  environment, newest first.

(The live view reads events newest first by id, arrival order, through the primary key
(environment_id, id) of migration 0006, which also serves the users' and companies' lists; the
counts per minute come from 0006's activity counts: no index on events for the console.)

Built CONCURRENTLY, outside the migration's transaction: on an installation that already holds
millions of events a plain CREATE INDEX would hold off every webhook write until it is built.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DELIVERED = sa.text("status = 'delivered'")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_outbox_env_delivered",
            "outbox",
            ["environment_id", "delivered_at"],
            postgresql_where=DELIVERED,
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_outbox_env_delivered",
            table_name="outbox",
            postgresql_concurrently=True,
            if_exists=True,
        )
