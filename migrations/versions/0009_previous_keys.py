"""every rotated-out key keeps its own grace period (previous_keys)

Revision ID: 0009_previous_keys
Revises: 0008_erasure_digests
Create Date: 2026-12-07 14:00:00

Until now an environment held one previous webhook key and one previous source write key: a
second rotation replaced the first's grace key, which stopped working at once although it had
been promised a grace period. `previous_keys` holds every rotated-out key with its own end
time. The live previous keys move over; the old columns go. Changes to the table announce
themselves on `environments_changed` like changes to `environments` (migration 0007), so each
process's key cache forgets what they change.

Citus: looked up by a key's digest across environments, like `environments` and `api_keys`,
so a reference table (its key is the digest, not led by environment_id).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from integration.store import citus

revision: str = "0009_previous_keys"
down_revision: str | None = "0008_erasure_digests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (kind, the old columns' prefix)
KINDS = (("webhook", "previous_webhook_key"), ("source_write", "previous_source_write_key"))


def upgrade() -> None:
    op.create_table(
        "previous_keys",
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("environment_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key_hint", sa.String(length=8), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "rotated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "kind IN ('webhook', 'source_write')", name=op.f("ck_previous_keys_kind")
        ),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_previous_keys_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_hash", name=op.f("pk_previous_keys")),
    )
    op.create_index("ix_previous_keys_environment_id", "previous_keys", ["environment_id", "kind"])
    # Run again over a schema Citus distributed already (after a downgrade): a reference table,
    # as 0012_citus leaves it, and without the NOTIFY trigger (0012 says why). Nothing on plain
    # Postgres.
    conn = op.get_bind()
    citus.follow(conn, "previous_keys")
    for kind, column in KINDS:
        # The old columns kept no hint of the previous key: '' says "not known".
        op.execute(
            f"""
            INSERT INTO previous_keys (key_hash, environment_id, kind, key_hint, expires_at)
            SELECT {column}_hash, id, '{kind}', '', {column}_expires_at FROM environments
            WHERE {column}_hash IS NOT NULL AND {column}_expires_at > now()
            """
        )
        op.drop_index(f"ix_environments_{column}_hash", table_name="environments")
        op.drop_column("environments", f"{column}_hash")
        op.drop_column("environments", f"{column}_expires_at")
    if citus.is_distributed(conn):
        return
    op.execute(
        """
        CREATE TRIGGER previous_keys_changed
        AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON previous_keys
        FOR EACH STATEMENT EXECUTE FUNCTION environments_changed()
        """
    )


def downgrade() -> None:
    # Not there on Citus (0012_citus drops it).
    op.execute("DROP TRIGGER IF EXISTS previous_keys_changed ON previous_keys")
    for kind, column in KINDS:
        op.add_column("environments", sa.Column(f"{column}_hash", sa.String(64)))
        op.add_column("environments", sa.Column(f"{column}_expires_at", sa.DateTime(timezone=True)))
        op.create_index(f"ix_environments_{column}_hash", "environments", [f"{column}_hash"])
        # One previous key per kind is all the old columns hold: the one promised longest.
        op.execute(
            f"""
            UPDATE environments e SET {column}_hash = p.key_hash,
                                      {column}_expires_at = p.expires_at
            FROM (SELECT DISTINCT ON (environment_id) environment_id, key_hash, expires_at
                  FROM previous_keys WHERE kind = '{kind}' AND expires_at > now()
                  ORDER BY environment_id, expires_at DESC) p
            WHERE e.id = p.environment_id
            """
        )
    op.drop_index("ix_previous_keys_environment_id", table_name="previous_keys")
    op.drop_table("previous_keys")
