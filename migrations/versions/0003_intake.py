"""the Segment-compatible intake: source write keys, CORS origins, outbound copies in events

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing environments get no source write key here: a key is shown once, when it is
    # made, and nobody would see one made by a migration. `make run` (or a rotation) makes it.
    op.add_column("environments", sa.Column("source_write_key_hash", sa.String(64)))
    op.add_column("environments", sa.Column("source_write_key_hint", sa.String(8)))
    op.add_column("environments", sa.Column("previous_source_write_key_hash", sa.String(64)))
    op.add_column(
        "environments",
        sa.Column("previous_source_write_key_expires_at", sa.DateTime(timezone=True)),
    )
    op.add_column(
        "environments",
        sa.Column(
            "store_outbound_events", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
    )
    op.add_column(
        "environments",
        sa.Column(
            "cors_allowed_origins",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
    )
    op.create_unique_constraint(
        op.f("uq_environments_source_write_key_hash"), "environments", ["source_write_key_hash"]
    )
    op.create_index(
        op.f("ix_environments_previous_source_write_key_hash"),
        "environments",
        ["previous_source_write_key_hash"],
    )
    op.create_index(
        "ix_environments_cors_allowed_origins",
        "environments",
        ["cors_allowed_origins"],
        postgresql_using="gin",
    )
    # A constant default: Postgres 11+ adds the column without rewriting the table.
    op.add_column(
        "events",
        sa.Column("direction", sa.String(8), server_default="inbound", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_events_direction"), "events", "direction IN ('inbound', 'outbound')"
    )
    # The new key first, then the old one goes: an insert running meanwhile always finds one.
    op.create_unique_constraint(
        op.f("uq_events_environment_id_message_id_direction"),
        "events",
        ["environment_id", "message_id", "direction"],
    )
    op.drop_constraint(op.f("uq_events_environment_id_message_id"), "events", type_="unique")


def downgrade() -> None:
    # Outbound copies go first: without `direction` they would collide with inbound rows.
    op.execute("DELETE FROM events WHERE direction = 'outbound'")
    op.create_unique_constraint(
        op.f("uq_events_environment_id_message_id"), "events", ["environment_id", "message_id"]
    )
    op.drop_constraint(
        op.f("uq_events_environment_id_message_id_direction"), "events", type_="unique"
    )
    op.drop_constraint(op.f("ck_events_direction"), "events", type_="check")
    op.drop_column("events", "direction")
    op.drop_index("ix_environments_cors_allowed_origins", table_name="environments")
    op.drop_index(op.f("ix_environments_previous_source_write_key_hash"), table_name="environments")
    op.drop_constraint(
        op.f("uq_environments_source_write_key_hash"), "environments", type_="unique"
    )
    for column in (
        "cors_allowed_origins",
        "store_outbound_events",
        "previous_source_write_key_expires_at",
        "previous_source_write_key_hash",
        "source_write_key_hint",
        "source_write_key_hash",
    ):
        op.drop_column("environments", column)
