"""unmerge: what each merge moved, so that an operator can put it back

Revision ID: 0019_unmerge
Revises: 0018_conflict_states
Create Date: 2026-12-07 19:30:00

- `identity_moves`: the rows a merge moved, one per row: each event (with the user it had
  before) and each anonymous id of the merged user. Goes with its merge-log row (erasure).
- `identity_log.undo`: what a merge changed that is not a row of its own (the merged user's
  profile and memberships, the traits it gave the user, whether it linked the previousId);
  `undone_at`, `undone_by`: when and by whom it was unmerged. Merges logged before this migration
  have no `undo` and cannot be unmerged.
- `events.anonymous_only`: the message named no userId (or a blocked one); the user it is stored
  under came from a link, and an unmerge that takes the link back takes the event back with it.
On Citus, `identity_moves` is distributed beside the merge log.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from integration.store import citus

revision: str = "0019_unmerge"
down_revision: str | None = "0018_conflict_states"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "events",
        sa.Column("anonymous_only", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("identity_log", sa.Column("undo", postgresql.JSONB(), nullable=True))
    op.add_column("identity_log", sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("identity_log", sa.Column("undone_by", sa.Text(), nullable=True))
    op.create_table(
        "identity_moves",
        sa.Column("environment_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("log_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("anonymous_id", sa.Text(), nullable=True),
        sa.Column("prior_user_id", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "(event_id IS NULL) <> (anonymous_id IS NULL)", name=op.f("ck_identity_moves_one_row")
        ),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_identity_moves_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["environment_id", "log_id"],
            ["identity_log.environment_id", "identity_log.id"],
            name=op.f("fk_identity_moves_environment_id_identity_log"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("environment_id", "id", name=op.f("pk_identity_moves")),
    )
    op.create_index("ix_identity_moves_env_log", "identity_moves", ["environment_id", "log_id"])
    citus.distribute(op.get_bind(), "identity_moves")


def downgrade() -> None:
    op.drop_table("identity_moves")
    for column in ("undone_by", "undone_at", "undo"):
        op.drop_column("identity_log", column)
    op.drop_column("events", "anonymous_only")
