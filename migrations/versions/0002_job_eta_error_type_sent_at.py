"""jobs: eta_s, error_type, sent_at

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("eta_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("error_type", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
    # Failures recorded before error types existed: the worker then counted ValueError and its
    # kin as input errors, so their type is not known.


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("sent_at")
        batch.drop_column("error_type")
        batch.drop_column("eta_s")
