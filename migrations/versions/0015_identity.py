"""identity rules: blocked ids, a limit of anonymous ids per user, a merge log and conflicts

Revision ID: 0015_identity
Revises: 0014_tracking_plans
Create Date: 2026-12-07 17:10:00

- `environments.blocked_ids` (null: the default placeholders), `max_anonymous_ids_per_user`,
  `allow_identified_merges`: the rules integration/inbound/identity.py applies at ingest.
- `activity_counts.blocked_ids`: messages stored as anonymous because their userId was blocked.
- `identity_log`: every link and merge made; `identity_conflicts`: every one refused.
Both hash-distributed by environment_id on Citus, beside the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from integration.store import citus

revision: str = "0015_identity"
down_revision: str | None = "0014_tracking_plans"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("identity_log", "identity_conflicts")


def _common(table: str) -> list[sa.SchemaItem]:
    return [
        sa.Column("environment_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("from_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f(f"fk_{table}_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("environment_id", "id", name=op.f(f"pk_{table}")),
    ]


def upgrade() -> None:
    op.add_column("environments", sa.Column("blocked_ids", sa.ARRAY(sa.Text()), nullable=True))
    op.add_column(
        "environments",
        sa.Column("max_anonymous_ids_per_user", sa.Integer(), server_default="100", nullable=False),
    )
    op.add_column(
        "environments",
        sa.Column(
            "allow_identified_merges", sa.Boolean(), server_default=sa.false(), nullable=False
        ),
    )
    op.add_column(
        "activity_counts",
        sa.Column("blocked_ids", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.create_table(
        "identity_log",
        *_common("identity_log"),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("events_moved", sa.Integer(), server_default="0", nullable=False),
        sa.Column("traits_moved", sa.Integer(), server_default="0", nullable=False),
        sa.Column("memberships_moved", sa.Integer(), server_default="0", nullable=False),
        sa.CheckConstraint("kind IN ('link', 'merge')", name=op.f("ck_identity_log_kind")),
    )
    op.create_table(
        "identity_conflicts",
        *_common("identity_conflicts"),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("existing_user_id", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('linked_elsewhere', 'identified_merge', 'anonymous_id_limit')",
            name=op.f("ck_identity_conflicts_kind"),
        ),
    )
    for table in TABLES:
        op.create_index(f"ix_{table}_env_user", table, ["environment_id", "user_id"])
        op.create_index(f"ix_{table}_env_from", table, ["environment_id", "from_id"])
        # On a Citus coordinator (0012_citus has run): distributed beside the others.
        citus.distribute(op.get_bind(), table)


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
    op.drop_column("activity_counts", "blocked_ids")
    for column in ("allow_identified_merges", "max_anonymous_ids_per_user", "blocked_ids"):
        op.drop_column("environments", column)
