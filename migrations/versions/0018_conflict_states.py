"""identity conflicts resolved by an operator: open, applied or dismissed

Revision ID: 0018_conflict_states
Revises: 0017_plan_ledger
Create Date: 2026-12-07 18:20:00

- `identity_conflicts.state`: open until an operator applies or dismisses it
  (integration/inbound/conflicts.py); `resolved_at` and `resolved_by` say when and who.
Every conflict recorded before this migration is open.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_conflict_states"
down_revision: str | None = "0017_plan_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "identity_conflicts",
        sa.Column("state", sa.String(length=16), server_default="open", nullable=False),
    )
    op.add_column(
        "identity_conflicts", sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("identity_conflicts", sa.Column("resolved_by", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_identity_conflicts_state"),
        "identity_conflicts",
        "state IN ('open', 'applied', 'dismissed')",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_identity_conflicts_state"), "identity_conflicts", type_="check")
    for column in ("resolved_by", "resolved_at", "state"):
        op.drop_column("identity_conflicts", column)
