"""environments announce their changes (NOTIFY environments_changed)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 05:00:00

Each API process remembers which environment a webhook key or source write key opens, and
forgets it when it hears on `environments_changed` (integration/environments/key_cache.py).
A statement-level trigger sends that notification whoever changes the table (the API, the
console, the CLI, an operator's SQL), when the change commits and only if it does.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION environments_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('environments_changed', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER environments_changed
        AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON environments
        FOR EACH STATEMENT EXECUTE FUNCTION environments_changed()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER environments_changed ON environments")
    op.execute("DROP FUNCTION environments_changed()")
