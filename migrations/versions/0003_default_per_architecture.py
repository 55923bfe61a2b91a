"""autoencoders: architecture_name, one default per architecture; default_builds

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# An autoencoder row whose architecture was never recorded (neither in its config nor on its zoo).
UNKNOWN_ARCHITECTURE = "unknown"


def _architecture_names(rows: list[Any]) -> dict[str, str]:
    """id -> Architecture.name of each row, the name checkpoints are recorded with. The library
    (and torch) is imported only when there are rows to name."""
    if not rows:
        return {}
    from zooscope.networks.architectures import Architecture

    names = {}
    for row in rows:
        recorded = (row.config or {}).get("architecture") or row.zoo_architecture
        names[row.id] = Architecture.from_dict(recorded).name if recorded else UNKNOWN_ARCHITECTURE
    return names


def upgrade() -> None:
    with op.batch_alter_table("autoencoders") as batch:
        batch.add_column(sa.Column("architecture_name", sa.String(length=100), nullable=True))
    connection = op.get_bind()
    autoencoders = sa.table(
        "autoencoders",
        sa.column("id", sa.String),
        sa.column("config", sa.JSON),
        sa.column("zoo_id", sa.String),
        sa.column("architecture_name", sa.String),
    )
    zoos = sa.table("zoos", sa.column("id", sa.String), sa.column("architecture", sa.JSON))
    rows = connection.execute(
        sa.select(
            autoencoders.c.id, autoencoders.c.config, zoos.c.architecture.label("zoo_architecture")
        ).select_from(autoencoders.outerjoin(zoos, zoos.c.id == autoencoders.c.zoo_id))
    ).all()
    for autoencoder_id, name in _architecture_names(list(rows)).items():
        connection.execute(
            sa.update(autoencoders).where(autoencoders.c.id == autoencoder_id).values(architecture_name=name)
        )
    with op.batch_alter_table("autoencoders") as batch:
        batch.alter_column("architecture_name", existing_type=sa.String(length=100), nullable=False)
        # Before: one default in the whole database. It is now its architecture's default.
        batch.drop_index("uq_autoencoders_single_default")
        batch.create_index(
            "uq_autoencoders_default_per_architecture",
            ["architecture_name"],
            unique=True,
            sqlite_where=sa.text("is_default"),
            postgresql_where=sa.text("is_default"),
        )

    op.create_table(
        "default_builds",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("architecture_name", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("stages", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_default_builds")),
        sa.UniqueConstraint("key", name=op.f("uq_default_builds_key")),
    )


def downgrade() -> None:
    op.drop_table("default_builds")
    connection = op.get_bind()
    autoencoders = sa.table(
        "autoencoders",
        sa.column("id", sa.String),
        sa.column("is_default", sa.Boolean),
        sa.column("created_at", sa.DateTime),
    )
    # One default in the whole database again: the newest of the per-architecture defaults.
    defaults = connection.execute(
        sa.select(autoencoders.c.id)
        .where(autoencoders.c.is_default.is_(True))
        .order_by(autoencoders.c.created_at.desc())
    ).all()
    for (autoencoder_id,) in defaults[1:]:
        connection.execute(
            sa.update(autoencoders).where(autoencoders.c.id == autoencoder_id).values(is_default=False)
        )
    with op.batch_alter_table("autoencoders") as batch:
        batch.drop_index("uq_autoencoders_default_per_architecture")
        batch.create_index(
            "uq_autoencoders_single_default",
            ["is_default"],
            unique=True,
            sqlite_where=sa.text("is_default"),
            postgresql_where=sa.text("is_default"),
        )
        batch.drop_column("architecture_name")
