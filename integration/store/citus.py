"""What a migration calls so that the schema it leaves is the same on plain Postgres and on a
Citus cluster (a coordinator and workers, with the `citus` extension in the database).

On plain Postgres every helper here does nothing. Where the extension exists:
- every table holding one environment's rows is hash-distributed by `environment_id`, all in
  one colocation group (a statement that names one environment touches one shard group);
- `environments`, `api_keys` and `system_state` are reference tables (a copy on every node);
- SQL functions the product's statements call (`merge_traits`) are distributed, so that the
  workers running those statements on their shards have them;
- the activity counts' triggers fire on the shards (on the workers) and add to the shard of
  `activity_counts` that holds the same environment, found by `shard_of`.

A future migration that adds a table keyed by environment calls `distribute(conn, "t")` after
creating it (`reference(conn, "t")` for one of installation-wide rows), and one that adds a SQL
function the product's statements call, `distribute_function(conn, "f(argtypes)")`. Other DDL
(columns, indexes, constraints) needs nothing: Citus applies it to every shard itself.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

DISTRIBUTION_COLUMN = "environment_id"
# The first distributed table names the colocation group the others join.
ANCHOR = "events"
DISTRIBUTED = (
    "events",
    "outbox",
    "users",
    "anonymous_ids",
    "companies",
    "memberships",
    "deletions",
    "activity_counts",
    "erased_messages",
    "erasure_counts",
    "delivery_attempts",
    "replays",
    "outbox_breakers",
    "mappings",
    "tracking_plans",
    "quarantine",
    "plan_violations",
    "identity_log",
    "identity_conflicts",
    "identity_moves",
)
# Reference tables first: the distributed tables' foreign keys point at `environments`.
# `previous_keys` is looked up by a key's digest, before any environment is known.
REFERENCE = ("environments", "system_state", "api_keys", "previous_keys")
FUNCTIONS = (
    "merge_traits(jsonb,jsonb,jsonb,jsonb)",
    "merge_trait_times(jsonb,jsonb)",
    "keyed_digest(bytea,bytea,text)",
)


def is_citus(conn: Connection) -> bool:
    """True when this database has the citus extension (and so is a Citus coordinator)."""
    return bool(
        conn.scalar(text("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"))
    )


def _partition_method(conn: Connection, table: str) -> str | None:
    """'h' for a hash-distributed table, 'n' for a reference table, None for a local one."""
    method = conn.scalar(
        text("SELECT partmethod FROM pg_dist_partition WHERE logicalrelid = CAST(:t AS regclass)"),
        {"t": table},
    )
    if isinstance(method, bytes):  # asyncpg hands a "char" over as bytes
        method = method.decode()
    return None if method is None else str(method)


def _exists(conn: Connection, table: str) -> bool:
    """Whether `table` exists yet: 0012_citus distributes the tables of DISTRIBUTED that exist,
    and a later migration distributes the ones it creates."""
    return conn.scalar(text("SELECT to_regclass(:t)"), {"t": table}) is not None


def prepare(conn: Connection) -> None:
    """The settings, for this transaction, that distributing and creating shard triggers need."""
    # Making a reference table of `environments` while local tables point at it would turn them
    # into Citus-local tables (which cannot have identity columns); they are distributed next.
    conn.execute(text("SET LOCAL citus.enable_local_reference_table_foreign_keys = off"))
    # The activity counts' triggers are meant to run on the shards (see count functions).
    conn.execute(text("SET LOCAL citus.enable_unsafe_triggers = on"))
    # DDL and data moves one connection per node, so that later statements in the same
    # transaction (the rest of the migration) can see them.
    conn.execute(text("SET LOCAL citus.multi_shard_modify_mode = 'sequential'"))


def reference(conn: Connection, table: str) -> None:
    """Make `table` a reference table on Citus (once); nothing on plain Postgres."""
    if not is_citus(conn) or _partition_method(conn, table) is not None:
        return
    prepare(conn)
    conn.execute(text("SELECT create_reference_table(CAST(:t AS regclass))"), {"t": table})


def distribute(conn: Connection, table: str) -> None:
    """Hash-distribute `table` by environment_id beside the others on Citus (once); nothing on
    plain Postgres."""
    if not is_citus(conn) or not _exists(conn, table) or _partition_method(conn, table) is not None:
        return
    prepare(conn)
    anchor = ANCHOR if table != ANCHOR and _partition_method(conn, ANCHOR) == "h" else "default"
    conn.execute(
        text("SELECT create_distributed_table(CAST(:t AS regclass), :col, colocate_with => :with)"),
        {"t": table, "col": DISTRIBUTION_COLUMN, "with": anchor},
    )


def distribute_function(conn: Connection, signature: str) -> None:
    """Make a SQL function exist on every node on Citus (and follow later CREATE OR REPLACE);
    nothing on plain Postgres. Idempotent."""
    if not is_citus(conn):
        return
    conn.execute(
        text("SELECT create_distributed_function(CAST(:f AS regprocedure))"), {"f": signature}
    )


def is_distributed(conn: Connection) -> bool:
    """True when this is a Citus database whose schema is distributed already (0012_citus ran)."""
    return is_citus(conn) and _partition_method(conn, ANCHOR) == "h"


def follow(conn: Connection, table: str) -> None:
    """For a migration from before 0012_citus: on a schema distributed already (the migration
    run again after a downgrade), make its new `table` what 0012 would (distributed, or a
    reference table), so that the statements of the rest of the chain can use it with the
    others. Nothing on plain Postgres, nor before 0012 has run (0012 distributes it then)."""
    if not is_distributed(conn):
        return
    if table in REFERENCE:
        reference(conn, table)
    else:
        distribute(conn, table)
