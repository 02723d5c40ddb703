"""on a Citus coordinator, distribute the schema by environment_id (nothing on plain Postgres)

Revision ID: 0012_citus
Revises: 0011_outbox_order
Create Date: 2026-12-07 14:00:00

Where the database has the `citus` extension (created before the first `migrate`, with the
workers added), this leaves:
- the thirteen tables of environment data hash-distributed by `environment_id` in one colocation
  group, and `environments`, `system_state`, `api_keys` as reference tables;
- `merge_traits` and the counting functions on every node;
- the activity counts' triggers on the shards: a statement on a shard of `events` or `outbox`
  adds to the shard of `activity_counts` of the same environment (on the same worker), named
  by `shard_of`, so the counts stay exact whichever node a statement runs on;
- no NOTIFY trigger on `environments` or `previous_keys`: a write to a reference table commits
  in two phases, and a prepared transaction cannot NOTIFY. The processes announce their own
  changes after commit and watch the tables besides (integration/environments/key_cache.py).

How a later migration stays right on both kinds of database: integration/store/citus.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from integration.store import citus

revision: str = "0012_citus"
down_revision: str | None = "0011_outbox_order"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STRIPES = 16

# The shard of a distributed (or reference) table holding `env`'s rows, by name: a trigger on a
# shard runs on the worker, where the table's own name would start a distributed query.
SHARD_OF = """
CREATE OR REPLACE FUNCTION shard_of(rel regclass, env uuid) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT quote_ident(relname || '_' || get_shard_id_for_distribution_column(rel, env))
  FROM pg_class WHERE oid = rel
$$"""

# Whether the environment still exists: a delete that cascades from it counts nothing.
LIVE = """
CREATE OR REPLACE FUNCTION environment_is_live(env uuid) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE live boolean;
BEGIN
  EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE id = $1)', shard_of('environments', env))
    INTO live USING env;
  RETURN live;
END $$"""

ADD_INBOUND = """INSERT INTO %s AS activity_counts
      (environment_id, bucket, slot, inbound, last_inbound_at)
    VALUES ($1, $2, pg_backend_pid() %% {stripes}, $3, $4)
    ON CONFLICT (environment_id, bucket, slot) DO UPDATE SET
      inbound = activity_counts.inbound + excluded.inbound,
      last_inbound_at = greatest(activity_counts.last_inbound_at, excluded.last_inbound_at)"""

ADD_DELIVERED = """INSERT INTO %s AS activity_counts
      (environment_id, bucket, slot, delivered, last_delivered_at)
    VALUES ($1, $2, pg_backend_pid() %% {stripes}, $3, $4)
    ON CONFLICT (environment_id, bucket, slot) DO UPDATE SET
      delivered = activity_counts.delivered + excluded.delivered,
      last_delivered_at = greatest(activity_counts.last_delivered_at,
                                   excluded.last_delivered_at)"""


def _add(statement: str) -> str:
    sql = statement.format(stripes=STRIPES).replace("'", "''")
    return (
        f"EXECUTE format('{sql}', shard_of('activity_counts', r.environment_id))"
        " USING r.environment_id, r.bucket, r.n, r.last;"
    )


def _deliveries(changes: str) -> str:
    return f"""FOR r IN
      SELECT environment_id, date_trunc('minute', delivered_at) AS bucket, sum(change) AS n,
             max(delivered_at) FILTER (WHERE change > 0) AS last
      FROM ({changes}) AS changes WHERE delivered_at IS NOT NULL
      GROUP BY 1, 2 HAVING sum(change) <> 0
    LOOP
      IF environment_is_live(r.environment_id) THEN
        {_add(ADD_DELIVERED)}
      END IF;
    END LOOP;"""


AFTER = (
    "SELECT environment_id, delivered_at, 1 AS change FROM after_rows WHERE status = 'delivered'"
)
BEFORE = (
    "SELECT environment_id, delivered_at, -1 AS change FROM before_rows WHERE status = 'delivered'"
)

# The same counts as migration 0006's functions, each group added to its environment's shard.
SHARD_FUNCTIONS = {
    "count_events_in_on_shard": f"""
CREATE OR REPLACE FUNCTION count_events_in_on_shard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  FOR r IN
    SELECT environment_id, date_trunc('minute', created_at) AS bucket, count(*) AS n,
           max(created_at) AS last
    FROM counted WHERE direction = 'inbound' GROUP BY 1, 2
  LOOP
    {_add(ADD_INBOUND)}
  END LOOP;
  RETURN NULL;
END $$""",
    "count_events_out_on_shard": f"""
CREATE OR REPLACE FUNCTION count_events_out_on_shard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  FOR r IN
    SELECT environment_id, date_trunc('minute', created_at) AS bucket, -count(*) AS n,
           NULL::timestamptz AS last
    FROM counted WHERE direction = 'inbound' GROUP BY 1, 2
  LOOP
    IF environment_is_live(r.environment_id) THEN
      {_add(ADD_INBOUND)}
    END IF;
  END LOOP;
  RETURN NULL;
END $$""",
    "count_deliveries_on_shard": f"""
CREATE OR REPLACE FUNCTION count_deliveries_on_shard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  IF TG_OP = 'INSERT' THEN
    {_deliveries(AFTER)}
  ELSIF TG_OP = 'DELETE' THEN
    {_deliveries(BEFORE)}
  ELSE
    {_deliveries(f"{AFTER} UNION ALL {BEFORE}")}
  END IF;
  RETURN NULL;
END $$""",
}

ADD_ACCEPTED = """INSERT INTO %s AS activity_counts (environment_id, bucket, slot, accepted)
    VALUES ($1, $2, pg_backend_pid() %% {stripes}, $3)
    ON CONFLICT (environment_id, bucket, slot) DO UPDATE SET
      accepted = activity_counts.accepted + excluded.accepted"""


def _accepted(rows: str, sign: str, where: str, live: bool) -> str:
    sql = ADD_ACCEPTED.format(stripes=STRIPES).replace("'", "''")
    add = (
        f"EXECUTE format('{sql}', shard_of('activity_counts', r.environment_id))"
        " USING r.environment_id, r.bucket, r.n;"
    )
    if live:
        add = f"IF environment_is_live(r.environment_id) THEN {add} END IF;"
    return f"""FOR r IN
      SELECT environment_id, date_trunc('minute', created_at) AS bucket, {sign}count(*) AS n
      FROM {rows} WHERE {where} GROUP BY 1, 2
    LOOP
      {add}
    END LOOP;"""


# Migration 0010's count of accepted outbound messages, likewise on the shards.
SHARD_FUNCTIONS["count_accepted_on_shard"] = f"""
CREATE OR REPLACE FUNCTION count_accepted_on_shard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  IF TG_OP = 'INSERT' THEN
    {_accepted("accepted_rows", "", "true", live=False)}
  ELSE
    {_accepted("gone_rows", "-", "status <> 'delivered'", live=True)}
  END IF;
  RETURN NULL;
END $$"""
# Migrations 0006's and 0010's triggers, on Citus with the `_on_shard` variants of their
# functions.
COUNT_TRIGGERS = {
    "events_counted_in": "AFTER INSERT ON events REFERENCING NEW TABLE AS counted"
    " FOR EACH STATEMENT EXECUTE FUNCTION count_events_in{}()",
    "events_counted_out": "AFTER DELETE ON events REFERENCING OLD TABLE AS counted"
    " FOR EACH STATEMENT EXECUTE FUNCTION count_events_out{}()",
    "outbox_counted_insert": "AFTER INSERT ON outbox REFERENCING NEW TABLE AS after_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION count_deliveries{}()",
    "outbox_counted_update": "AFTER UPDATE ON outbox"
    " REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION count_deliveries{}()",
    "outbox_counted_delete": "AFTER DELETE ON outbox REFERENCING OLD TABLE AS before_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION count_deliveries{}()",
    "outbox_accepted_insert": "AFTER INSERT ON outbox REFERENCING NEW TABLE AS accepted_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION count_accepted{}()",
    "outbox_accepted_delete": "AFTER DELETE ON outbox REFERENCING OLD TABLE AS gone_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION count_accepted{}()",
}


def _table_of(trigger: str) -> str:
    return trigger.split("_", 1)[0]


def upgrade() -> None:
    conn = op.get_bind()
    if not citus.is_citus(conn):
        return
    citus.prepare(conn)
    # Distributing a table copies its rows to the shards; the triggers come back on the shards.
    op.execute("DROP TRIGGER IF EXISTS environments_changed ON environments")
    op.execute("DROP TRIGGER IF EXISTS previous_keys_changed ON previous_keys")
    for trigger in COUNT_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {_table_of(trigger)}")
    for table in citus.REFERENCE:
        citus.reference(conn, table)
    for table in citus.DISTRIBUTED:
        citus.distribute(conn, table)
    op.execute(SHARD_OF)
    op.execute(LIVE)
    for signature in (*citus.FUNCTIONS, "shard_of(regclass,uuid)", "environment_is_live(uuid)"):
        citus.distribute_function(conn, signature)
    for name, statement in SHARD_FUNCTIONS.items():
        op.execute(statement)
        citus.distribute_function(conn, f"{name}()")
    for trigger, definition in COUNT_TRIGGERS.items():
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {_table_of(trigger)}")
        op.execute(f"CREATE TRIGGER {trigger} {definition.format('_on_shard')}")


def downgrade() -> None:
    """Nothing, on either kind of database. On Citus the schema stays distributed: Citus cannot
    undistribute a table with an identity column, and neither migration 0007's NOTIFY trigger
    nor 0006's counting functions can work on distributed tables. Upgrading again re-runs the
    upgrade, which finishes whatever is not yet distributed: also the way to distribute a
    database migrated before its citus extension was created (README, "Running at scale")."""
