"""activity counts kept by triggers, retention per environment, keys led by environment_id

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 04:00:00

- `activity_counts`: events received (inbound; not the copies of outbound messages) and
  deliveries made, per environment and minute, kept by
  statement-level triggers on `events` and `outbox`, whoever writes (the webhook's writers, the
  worker, an operator's SQL). The stats and the console read these few rows instead of counting
  millions. Concurrent transactions write different stripes (`slot`, from the backend's pid),
  so two writers never wait on one counter row; the worker folds old minutes into days.
- `environments.retention_days`: events older than this are expired by the worker (NULL keeps
  them forever).
- Primary keys of the tables keyed by environment lead with `environment_id`: what a
  distributed Postgres (Citus, with environment_id as the distribution column) requires.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STRIPES = 16
KEYED_BY_ID = ("users", "companies", "events", "outbox", "deletions")

# A delete that cascades from its environment counts nothing: the environment and its counts
# are going too (and a count row for it would break the foreign key).
LIVE = "EXISTS (SELECT 1 FROM environments e WHERE e.id = environment_id)"


def _count_deliveries(changes: str) -> str:
    """The upsert of delivered counts for `changes` (environment_id, delivered_at, change); only
    rows whose status is 'delivered' count."""
    return f"""INSERT INTO activity_counts (environment_id, bucket, slot, delivered,
                                 last_delivered_at)
    SELECT environment_id, date_trunc('minute', delivered_at), pg_backend_pid() % {STRIPES},
           sum(change), max(delivered_at) FILTER (WHERE change > 0)
    FROM ({changes}) AS changes
    WHERE delivered_at IS NOT NULL AND {LIVE}
    GROUP BY 1, 2
    HAVING sum(change) <> 0
    ON CONFLICT (environment_id, bucket, slot) DO UPDATE SET
      delivered = activity_counts.delivered + excluded.delivered,
      last_delivered_at = greatest(activity_counts.last_delivered_at,
                                   excluded.last_delivered_at)"""


AFTER = "environment_id, delivered_at, 1 AS change FROM after_rows WHERE status = 'delivered'"
BEFORE = "environment_id, delivered_at, -1 AS change FROM before_rows WHERE status = 'delivered'"

# Each trigger adds what its statement did, grouped by environment and minute, to the stripe of
# its backend: a transaction holds one counter row per environment until it commits, and
# another transaction (another backend) almost always holds another.
FUNCTIONS = [
    f"""
CREATE FUNCTION count_events_in() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO activity_counts (environment_id, bucket, slot, inbound, last_inbound_at)
  SELECT environment_id, date_trunc('minute', created_at), pg_backend_pid() % {STRIPES},
         count(*), max(created_at)
  FROM counted WHERE direction = 'inbound' GROUP BY 1, 2
  ON CONFLICT (environment_id, bucket, slot) DO UPDATE SET
    inbound = activity_counts.inbound + excluded.inbound,
    last_inbound_at = greatest(activity_counts.last_inbound_at, excluded.last_inbound_at);
  RETURN NULL;
END $$""",
    f"""
CREATE FUNCTION count_events_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO activity_counts (environment_id, bucket, slot, inbound)
  SELECT environment_id, date_trunc('minute', created_at), pg_backend_pid() % {STRIPES},
         -count(*)
  FROM counted WHERE direction = 'inbound' AND {LIVE} GROUP BY 1, 2
  ON CONFLICT (environment_id, bucket, slot) DO UPDATE SET
    inbound = activity_counts.inbound + excluded.inbound;
  RETURN NULL;
END $$""",
    # Deliveries: rows delivered after the statement that were not before (an insert has no
    # "before", a delete no "after"), by the minute they were delivered. PL/pgSQL plans a query
    # when it runs it, so each branch names only the transition tables its trigger has.
    f"""
CREATE FUNCTION count_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {_count_deliveries(f"SELECT {AFTER}")};
  ELSIF TG_OP = 'DELETE' THEN
    {_count_deliveries(f"SELECT {BEFORE}")};
  ELSE
    {_count_deliveries(f"SELECT {AFTER} UNION ALL SELECT {BEFORE}")};
  END IF;
  RETURN NULL;
END $$""",
]

TRIGGERS = [
    """CREATE TRIGGER events_counted_in AFTER INSERT ON events
       REFERENCING NEW TABLE AS counted FOR EACH STATEMENT EXECUTE FUNCTION count_events_in()""",
    """CREATE TRIGGER events_counted_out AFTER DELETE ON events
       REFERENCING OLD TABLE AS counted FOR EACH STATEMENT EXECUTE FUNCTION count_events_out()""",
]
# A trigger with transition tables fires for one event only; the same function serves each.
DELIVERY_TRIGGERS = {
    "INSERT": "REFERENCING NEW TABLE AS after_rows",
    "UPDATE": "REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows",
    "DELETE": "REFERENCING OLD TABLE AS before_rows",
}


def upgrade() -> None:
    op.create_table(
        "activity_counts",
        sa.Column("environment_id", sa.UUID(), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("inbound", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("delivered", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_inbound_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_activity_counts_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "environment_id", "bucket", "slot", name=op.f("pk_activity_counts")
        ),
    )
    op.add_column("environments", sa.Column("retention_days", sa.Integer(), nullable=True))
    for statement in FUNCTIONS:
        op.execute(statement)
    # The rows already stored are counted once, as one stripe.
    op.execute(
        """INSERT INTO activity_counts (environment_id, bucket, slot, inbound, last_inbound_at)
           SELECT environment_id, date_trunc('minute', created_at), 0, count(*), max(created_at)
           FROM events WHERE direction = 'inbound' GROUP BY 1, 2"""
    )
    op.execute(
        """INSERT INTO activity_counts (environment_id, bucket, slot, delivered,
                                        last_delivered_at)
           SELECT environment_id, date_trunc('minute', delivered_at), 0, count(*),
                  max(delivered_at)
           FROM outbox WHERE status = 'delivered' AND delivered_at IS NOT NULL GROUP BY 1, 2
           ON CONFLICT (environment_id, bucket, slot) DO UPDATE SET
             delivered = excluded.delivered, last_delivered_at = excluded.last_delivered_at"""
    )
    for statement in TRIGGERS:
        op.execute(statement)
    for event, tables in DELIVERY_TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER outbox_counted_{event.lower()} AFTER {event} ON outbox {tables}"
            " FOR EACH STATEMENT EXECUTE FUNCTION count_deliveries()"
        )
    for table in KEYED_BY_ID:
        op.drop_constraint(f"pk_{table}", table, type_="primary")
        op.create_primary_key(f"pk_{table}", table, ["environment_id", "id"])


def downgrade() -> None:
    for table in KEYED_BY_ID:
        op.drop_constraint(f"pk_{table}", table, type_="primary")
        op.create_primary_key(f"pk_{table}", table, ["id"])
    for event in DELIVERY_TRIGGERS:
        op.execute(f"DROP TRIGGER outbox_counted_{event.lower()} ON outbox")
    op.execute("DROP TRIGGER events_counted_out ON events")
    op.execute("DROP TRIGGER events_counted_in ON events")
    for name in ("count_deliveries", "count_events_out", "count_events_in"):
        op.execute(f"DROP FUNCTION {name}()")
    op.drop_column("environments", "retention_days")
    op.drop_table("activity_counts")
