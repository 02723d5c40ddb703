"""deletions audit, outbox lookups for erasure and retention, system state

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 02:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deletions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("environment_id", sa.UUID(), nullable=False),
        sa.Column("user_id_hash", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=16), nullable=False),
        sa.Column("removed", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "requested_by IN ('segment', 'admin')", name=op.f("ck_deletions_requested_by")
        ),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_deletions_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deletions")),
        sa.UniqueConstraint(
            "environment_id", "message_id", name=op.f("uq_deletions_environment_id_message_id")
        ),
    )
    op.create_index("ix_deletions_env_id", "deletions", ["environment_id", "id"])
    # Erasure finds a person's outbound messages by the ids inside the payload.
    op.create_index(
        "ix_outbox_env_user",
        "outbox",
        ["environment_id", sa.text("(payload ->> 'userId')")],
        postgresql_where=sa.text("payload ? 'userId'"),
    )
    op.create_index(
        "ix_outbox_env_anonymous",
        "outbox",
        ["environment_id", sa.text("(payload ->> 'anonymousId')")],
        postgresql_where=sa.text("payload ? 'anonymousId'"),
    )
    # Retention purges delivered rows oldest first.
    op.create_index(
        "ix_outbox_delivered_at",
        "outbox",
        ["delivered_at"],
        postgresql_where=sa.text("status = 'delivered'"),
    )
    op.create_table(
        "system_state",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_system_state")),
    )


def downgrade() -> None:
    op.drop_table("system_state")
    op.drop_index("ix_outbox_delivered_at", table_name="outbox")
    op.drop_index("ix_outbox_env_anonymous", table_name="outbox")
    op.drop_index("ix_outbox_env_user", table_name="outbox")
    op.drop_index("ix_deletions_env_id", table_name="deletions")
    op.drop_table("deletions")
