"""tracking plans, per environment and direction, one row per version; the quarantine of
messages a plan did not fit, kept whole with their violations; and the violations counted by
event, property and rule

Revision ID: 0014_tracking_plans
Revises: 0013_mappings
Create Date: 2026-12-07 17:00:00

Both tables are keyed by environment first and distributed by it on Citus (nothing on plain
Postgres): integration/store/citus.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from integration.store import citus

revision: str = "0014_tracking_plans"
down_revision: str | None = "0013_mappings"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _environment() -> list[sa.SchemaItem]:
    return [
        sa.Column("environment_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "tracking_plans",
        *_environment(),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("plan", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("unplanned_event", sa.String(length=16), nullable=False),
        sa.Column("unplanned_property", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "direction IN ('inbound', 'outbound')", name=op.f("ck_tracking_plans_direction")
        ),
        sa.CheckConstraint(
            "unplanned_event IN ('allow', 'quarantine')",
            name=op.f("ck_tracking_plans_unplanned_event"),
        ),
        sa.CheckConstraint(
            "unplanned_property IN ('keep', 'quarantine')",
            name=op.f("ck_tracking_plans_unplanned_property"),
        ),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_tracking_plans_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("environment_id", "id", name=op.f("pk_tracking_plans")),
        sa.UniqueConstraint(
            "environment_id",
            "direction",
            "version",
            name=op.f("uq_tracking_plans_environment_id_direction_version"),
        ),
    )
    op.create_table(
        "quarantine",
        *_environment(),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("event", sa.Text(), nullable=True),
        sa.Column("message", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("violations", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="quarantined", nullable=False),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "direction IN ('inbound', 'outbound')", name=op.f("ck_quarantine_direction")
        ),
        sa.CheckConstraint(
            "state IN ('quarantined', 'released', 'discarded')", name=op.f("ck_quarantine_state")
        ),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_quarantine_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("environment_id", "id", name=op.f("pk_quarantine")),
        sa.UniqueConstraint(
            "environment_id",
            "direction",
            "message_id",
            name=op.f("uq_quarantine_environment_id_direction_message_id"),
        ),
    )
    op.create_index("ix_quarantine_env_state_id", "quarantine", ["environment_id", "state", "id"])
    op.create_index(
        "ix_quarantine_env_user",
        "quarantine",
        ["environment_id", sa.text("(message ->> 'userId')")],
        postgresql_where=sa.text("message ? 'userId'"),
    )
    op.create_table(
        "plan_violations",
        sa.Column("environment_id", sa.UUID(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("property", sa.Text(), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("sample", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "first_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column(
            "last_seen_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "direction IN ('inbound', 'outbound')", name=op.f("ck_plan_violations_direction")
        ),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_plan_violations_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "environment_id",
            "direction",
            "event",
            "property",
            "rule",
            name=op.f("pk_plan_violations"),
        ),
    )
    bind = op.get_bind()
    for table in ("tracking_plans", "quarantine", "plan_violations"):
        citus.distribute(bind, table)


def downgrade() -> None:
    op.drop_table("plan_violations")
    op.drop_table("quarantine")
    op.drop_table("tracking_plans")
