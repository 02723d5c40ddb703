"""per-environment mappings: each change a new version (mappings)

Revision ID: 0013_mappings
Revises: 0012_citus
Create Date: 2026-12-07 17:00:00

- `mappings`: an environment's mapping for one direction (inbound, outbound), one row per
  version: the trigger (Segment's subscription condition; null: every message), the mapping
  (Segment's mapping-kit JSON), who made it and when. Nothing is updated or deleted: a change,
  a revert or a promotion adds the next version; the highest is the current one. Keyed by
  environment first, so on Citus it is distributed with the environment's other rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from integration.store import citus

revision: str = "0013_mappings"
down_revision: str | None = "0012_citus"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mappings",
        sa.Column("environment_id", sa.UUID(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=True),
        sa.Column("mapping", sa.dialects.postgresql.JSONB(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "direction IN ('inbound', 'outbound')", name=op.f("ck_mappings_direction")
        ),
        sa.CheckConstraint("version > 0", name=op.f("ck_mappings_version")),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_mappings_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("environment_id", "direction", "version", name=op.f("pk_mappings")),
    )
    # On a schema Citus distributed already, distributed with the rest (nothing on plain
    # Postgres; a later run of 0012_citus distributes it too, since citus.DISTRIBUTED names it).
    citus.follow(op.get_bind(), "mappings")


def downgrade() -> None:
    op.drop_table("mappings")
