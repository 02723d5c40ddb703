"""the ledger: messages counted by outcome; delivery attempts; replays; redeliveries

Revision ID: 0010_ledger
Revises: 0009_previous_keys
Create Date: 2026-12-07 15:00:00

- `activity_counts` gains the ledger's counts, per environment and minute like the rest:
  inbound `received`, `stored`, `duplicates` and `refused_*` (written by the webhook's group
  commit in the transaction that stores the messages), and outbound `accepted` (kept by a
  trigger on `outbox`: a row in is accepted; an undelivered row deleted, which only an erasure
  does, is taken back, so that the outbound sums keep holding).
- `events.redeliveries` / `last_redelivered_at`: how often Segment sent a stored message again.
- `delivery_attempts`: each attempt at delivering an outbox row (and each replay of it), with
  Segment's status; deleted with its row (erasure, retention) by the foreign key.
- `replays`: who replayed which filter, when, and how many rows it queued.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from integration.store import citus

revision: str = "0010_ledger"
down_revision: str | None = "0009_previous_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STRIPES = 16
LEDGER_COLUMNS = (
    "received",
    "stored",
    "duplicates",
    "refused_signature",
    "refused_invalid",
    "refused_too_large",
    "accepted",
)
LIVE = "EXISTS (SELECT 1 FROM environments e WHERE e.id = environment_id)"


def _count_accepted(rows: str, sign: str, where: str) -> str:
    return f"""INSERT INTO activity_counts (environment_id, bucket, slot, accepted)
    SELECT environment_id, date_trunc('minute', created_at), pg_backend_pid() % {STRIPES},
           {sign}count(*)
    FROM {rows} WHERE {where} GROUP BY 1, 2
    ON CONFLICT (environment_id, bucket, slot) DO UPDATE SET
      accepted = activity_counts.accepted + excluded.accepted"""


# Rows accepted are counted by the minute they were created in, the minute the ledger reads
# their current state by; a delete takes back only undelivered rows (a delivered row purged by
# retention stays delivered), and counts nothing when its environment is going too.
COUNT_ACCEPTED = f"""
CREATE FUNCTION count_accepted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {_count_accepted("accepted_rows", "", "true")};
  ELSE
    {_count_accepted("gone_rows", "-", f"status <> 'delivered' AND {LIVE}")};
  END IF;
  RETURN NULL;
END $$"""


def upgrade() -> None:
    for column in LEDGER_COLUMNS:
        op.add_column(
            "activity_counts",
            sa.Column(column, sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        )
    op.add_column(
        "events",
        sa.Column("redeliveries", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "events", sa.Column("last_redelivered_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_table(
        "delivery_attempts",
        sa.Column("environment_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("outbox_id", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "attempted_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["environment_id", "outbox_id"],
            ["outbox.environment_id", "outbox.id"],
            name=op.f("fk_delivery_attempts_environment_id_outbox"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("environment_id", "id", name=op.f("pk_delivery_attempts")),
    )
    op.create_index(
        "ix_delivery_attempts_env_outbox",
        "delivery_attempts",
        ["environment_id", "outbox_id", "id"],
    )
    # Run again over a schema Citus distributed already (after a downgrade): distributed, as
    # 0012_citus leaves them. Nothing on plain Postgres.
    citus.follow(op.get_bind(), "delivery_attempts")
    op.create_table(
        "replays",
        sa.Column("environment_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("filter", sa.dialects.postgresql.JSONB(), nullable=False),
        sa.Column("queued", sa.Integer(), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_replays_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("environment_id", "id", name=op.f("pk_replays")),
    )
    citus.follow(op.get_bind(), "replays")
    op.execute(COUNT_ACCEPTED)
    # The rows already in the outbox were accepted: counted once, as one stripe.
    op.execute(
        """INSERT INTO activity_counts (environment_id, bucket, slot, accepted)
           SELECT environment_id, date_trunc('minute', created_at), 0, count(*)
           FROM outbox GROUP BY 1, 2
           ON CONFLICT (environment_id, bucket, slot) DO UPDATE SET
             accepted = excluded.accepted"""
    )
    op.execute(
        "CREATE TRIGGER outbox_accepted_insert AFTER INSERT ON outbox"
        " REFERENCING NEW TABLE AS accepted_rows"
        " FOR EACH STATEMENT EXECUTE FUNCTION count_accepted()"
    )
    op.execute(
        "CREATE TRIGGER outbox_accepted_delete AFTER DELETE ON outbox"
        " REFERENCING OLD TABLE AS gone_rows"
        " FOR EACH STATEMENT EXECUTE FUNCTION count_accepted()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER outbox_accepted_delete ON outbox")
    op.execute("DROP TRIGGER outbox_accepted_insert ON outbox")
    op.execute("DROP FUNCTION count_accepted()")
    op.drop_table("replays")
    op.drop_index("ix_delivery_attempts_env_outbox", table_name="delivery_attempts")
    op.drop_table("delivery_attempts")
    op.drop_column("events", "last_redelivered_at")
    op.drop_column("events", "redeliveries")
    for column in reversed(LEDGER_COLUMNS):
        op.drop_column("activity_counts", column)
