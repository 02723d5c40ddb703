"""erased messages remembered by keyed digest; deletes of unknown users counted

Revision ID: 0008_erasure_digests
Revises: 0007
Create Date: 2026-12-07 14:00:00

- `keyed_digest(ipad, opad, text)`: HMAC-SHA256 written out with the built-in `sha256`, so the
  statements that erase and that insert events compute digests themselves, with no round trip
  (integration/inbound/digests.py hands them the key's padded blocks). Not STRICT, so that the
  planner can inline it (its body is null for a null anyway).
- `erased_messages`: the keyed digest of the messageId of every message an erasure removed, and
  of every `delete` carried out. The webhook's insert skips a message whose digest is here, so a
  redelivered copy of an erased person's message is a duplicate, not a resurrection (#19.2).
  Nothing personal: without the install's key a digest cannot be tested against a guess.
- `erasure_counts`: Segment deletes that found nothing to erase, counted per environment instead
  of each leaving an audit row (#20.8).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from integration.store import citus

revision: str = "0008_erasure_digests"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION keyed_digest(ipad bytea, opad bytea, value text) RETURNS bytea
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        RETURN sha256(opad || sha256(ipad || convert_to(value, 'UTF8')))
        """
    )
    op.create_table(
        "erased_messages",
        sa.Column("environment_id", sa.UUID(), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_erased_messages_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("environment_id", "digest", name=op.f("pk_erased_messages")),
    )
    op.create_table(
        "erasure_counts",
        sa.Column("environment_id", sa.UUID(), nullable=False),
        sa.Column("unmatched", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_unmatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_erasure_counts_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("environment_id", name=op.f("pk_erasure_counts")),
    )
    # Run again over a schema Citus distributed already (after a downgrade): left as 0012_citus
    # leaves them. Nothing on plain Postgres.
    conn = op.get_bind()
    for table in ("erased_messages", "erasure_counts"):
        citus.follow(conn, table)
    if citus.is_distributed(conn):
        citus.distribute_function(conn, "keyed_digest(bytea,bytea,text)")


def downgrade() -> None:
    op.drop_table("erasure_counts")
    op.drop_table("erased_messages")
    op.execute("DROP FUNCTION keyed_digest(bytea, bytea, text)")
