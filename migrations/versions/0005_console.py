"""indexes the console's pages are served from

Revision ID: 0005
Revises: 0002
Create Date: 2026-12-01 04:00:00

- events (environment_id, created_at, id): the live view (the last messages to arrive, newest
  first), an environment's last activity, and arrivals per minute for the delivery chart.
  `timestamp` is the sender's clock and a backfill may carry any time; arrival order needs ours.
- users, companies (environment_id, id): the browse lists, newest first, for one environment
  among many (the primary key alone walks every environment's rows).
- outbox (environment_id, delivered_at) for delivered rows: deliveries per minute, the last
  delivered batches and the hour/day counts of one environment.

Built CONCURRENTLY, outside the migration's transaction: on an installation that already holds
millions of events a plain CREATE INDEX would hold off every webhook write until it is built.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DELIVERED = sa.text("status = 'delivered'")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_events_env_created",
            "events",
            ["environment_id", "created_at", "id"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.create_index(
            "ix_users_env_id",
            "users",
            ["environment_id", "id"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.create_index(
            "ix_companies_env_id",
            "companies",
            ["environment_id", "id"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )
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
        for table, name in (
            ("outbox", "ix_outbox_env_delivered"),
            ("companies", "ix_companies_env_id"),
            ("users", "ix_users_env_id"),
            ("events", "ix_events_env_created"),
        ):
            op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
