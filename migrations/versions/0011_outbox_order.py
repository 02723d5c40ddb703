"""outbox rows carry their person (identity_key), so delivery keeps each person's order; and
each environment's delivery breaker (outbox_breakers)

Revision ID: 0011_outbox_order
Revises: 0010_ledger
Create Date: 2026-12-07 15:00:00

- `outbox.identity_key`: the message's userId, else its anonymousId, written with the row.
  The claim passes over a row while an older pending row of the same person is waiting for its
  retry or is in another worker's batch (integration/outbound/outbox.py, CLAIM). No index of
  its own: the claim groups the rows it reads through ix_outbox_due and
  ix_outbox_env_status_id by it, once per claim.
- `outbox_breakers`: per environment, since when every delivery round has failed, and whether
  delivery paused itself for that (integration/outbound/breaker.py).

Adding a nullable column without a default rewrites nothing; only pending and dead rows are
filled in (delivered ones are never claimed again; a dead one may be, once replayed).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from integration.store import citus

revision: str = "0011_outbox_order"
down_revision: str | None = "0010_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("identity_key", sa.Text(), nullable=True))
    op.execute(
        "UPDATE outbox SET identity_key = coalesce(payload ->> 'userId', payload ->> 'anonymousId')"
        " WHERE status IN ('pending', 'dead')"
    )
    op.create_table(
        "outbox_breakers",
        sa.Column("environment_id", sa.UUID(), nullable=False),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("probe_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("resumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resumed_by", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_outbox_breakers_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("environment_id", name=op.f("pk_outbox_breakers")),
    )
    # Run again over a schema Citus distributed already (after a downgrade): distributed as
    # 0012_citus leaves it. Nothing on plain Postgres.
    citus.follow(op.get_bind(), "outbox_breakers")


def downgrade() -> None:
    op.drop_table("outbox_breakers")
    op.drop_column("outbox", "identity_key")
