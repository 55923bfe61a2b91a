"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "owners",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_owners")),
        sa.UniqueConstraint("name", name=op.f("uq_owners_name")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["owners.id"], name=op.f("fk_api_keys_owner_id_owners"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_owner_id"), ["owner_id"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=True),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("celery_task_id", sa.String(length=100), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=200), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["owners.id"], name=op.f("fk_jobs_owner_id_owners"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_owner_id"), ["owner_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_state"), ["state"], unique=False)
        batch_op.create_index(
            "uq_jobs_owner_idempotency_key",
            ["owner_id", "idempotency_key"],
            unique=True,
            sqlite_where=sa.text("owner_id IS NOT NULL AND idempotency_key IS NOT NULL"),
            postgresql_where=sa.text("owner_id IS NOT NULL AND idempotency_key IS NOT NULL"),
        )
        batch_op.create_index(
            "uq_jobs_shared_idempotency_key",
            ["idempotency_key"],
            unique=True,
            sqlite_where=sa.text("owner_id IS NULL AND idempotency_key IS NOT NULL"),
            postgresql_where=sa.text("owner_id IS NULL AND idempotency_key IS NOT NULL"),
        )

    op.create_table(
        "zoos",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("dataset", sa.String(length=100), nullable=True),
        sa.Column("architecture", sa.JSON(), nullable=True),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("n_models", sa.Integer(), nullable=False),
        sa.Column("source_job_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["owners.id"], name=op.f("fk_zoos_owner_id_owners"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["source_job_id"], ["jobs.id"], name=op.f("fk_zoos_source_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_zoos")),
    )
    with op.batch_alter_table("zoos", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_zoos_owner_id"), ["owner_id"], unique=False)

    op.create_table(
        "autoencoders",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("zoo_id", sa.String(length=36), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("training_log", sa.JSON(), nullable=False),
        sa.Column("evaluation", sa.JSON(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("source_job_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["owners.id"], name=op.f("fk_autoencoders_owner_id_owners"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["source_job_id"],
            ["jobs.id"],
            name=op.f("fk_autoencoders_source_job_id_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["zoo_id"], ["zoos.id"], name=op.f("fk_autoencoders_zoo_id_zoos"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_autoencoders")),
    )
    with op.batch_alter_table("autoencoders", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_autoencoders_owner_id"), ["owner_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_autoencoders_zoo_id"), ["zoo_id"], unique=False)
        batch_op.create_index(
            "uq_autoencoders_single_default",
            ["is_default"],
            unique=True,
            sqlite_where=sa.text("is_default"),
            postgresql_where=sa.text("is_default"),
        )

    op.create_table(
        "checkpoints",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("upload_sha256", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("architecture", sa.JSON(), nullable=False),
        sa.Column("architecture_name", sa.String(length=100), nullable=False),
        sa.Column("n_parameters", sa.Integer(), nullable=False),
        sa.Column("n_tokens", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("blob_key", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("zoo_id", sa.String(length=36), nullable=True),
        sa.Column("zoo_model_id", sa.String(length=200), nullable=True),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("source_job_id", sa.String(length=36), nullable=True),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["owners.id"], name=op.f("fk_checkpoints_owner_id_owners"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["source_job_id"],
            ["jobs.id"],
            name=op.f("fk_checkpoints_source_job_id_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["zoo_id"], ["zoos.id"], name=op.f("fk_checkpoints_zoo_id_zoos"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkpoints")),
    )
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_checkpoints_architecture_name"), ["architecture_name"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_checkpoints_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_checkpoints_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_checkpoints_owner_id"), ["owner_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_checkpoints_sha256"), ["sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_checkpoints_source_job_id"), ["source_job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_checkpoints_upload_sha256"), ["upload_sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_checkpoints_zoo_id"), ["zoo_id"], unique=False)
        batch_op.create_index(
            "uq_checkpoints_owner_sha256",
            ["owner_id", "sha256"],
            unique=True,
            sqlite_where=sa.text("owner_id IS NOT NULL"),
            postgresql_where=sa.text("owner_id IS NOT NULL"),
        )
        batch_op.create_index(
            "uq_checkpoints_shared_sha256",
            ["sha256"],
            unique=True,
            sqlite_where=sa.text("owner_id IS NULL"),
            postgresql_where=sa.text("owner_id IS NULL"),
        )


def downgrade() -> None:

    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_checkpoints_shared_sha256",
            sqlite_where=sa.text("owner_id IS NULL"),
            postgresql_where=sa.text("owner_id IS NULL"),
        )
        batch_op.drop_index(
            "uq_checkpoints_owner_sha256",
            sqlite_where=sa.text("owner_id IS NOT NULL"),
            postgresql_where=sa.text("owner_id IS NOT NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_checkpoints_zoo_id"))
        batch_op.drop_index(batch_op.f("ix_checkpoints_upload_sha256"))
        batch_op.drop_index(batch_op.f("ix_checkpoints_source_job_id"))
        batch_op.drop_index(batch_op.f("ix_checkpoints_sha256"))
        batch_op.drop_index(batch_op.f("ix_checkpoints_owner_id"))
        batch_op.drop_index(batch_op.f("ix_checkpoints_kind"))
        batch_op.drop_index(batch_op.f("ix_checkpoints_created_at"))
        batch_op.drop_index(batch_op.f("ix_checkpoints_architecture_name"))

    op.drop_table("checkpoints")
    with op.batch_alter_table("autoencoders", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_autoencoders_single_default",
            sqlite_where=sa.text("is_default"),
            postgresql_where=sa.text("is_default"),
        )
        batch_op.drop_index(batch_op.f("ix_autoencoders_zoo_id"))
        batch_op.drop_index(batch_op.f("ix_autoencoders_owner_id"))

    op.drop_table("autoencoders")
    with op.batch_alter_table("zoos", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_zoos_owner_id"))

    op.drop_table("zoos")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_jobs_shared_idempotency_key",
            sqlite_where=sa.text("owner_id IS NULL AND idempotency_key IS NOT NULL"),
            postgresql_where=sa.text("owner_id IS NULL AND idempotency_key IS NOT NULL"),
        )
        batch_op.drop_index(
            "uq_jobs_owner_idempotency_key",
            sqlite_where=sa.text("owner_id IS NOT NULL AND idempotency_key IS NOT NULL"),
            postgresql_where=sa.text("owner_id IS NOT NULL AND idempotency_key IS NOT NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_jobs_state"))
        batch_op.drop_index(batch_op.f("ix_jobs_owner_id"))
        batch_op.drop_index(batch_op.f("ix_jobs_kind"))
        batch_op.drop_index(batch_op.f("ix_jobs_created_at"))

    op.drop_table("jobs")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_owner_id"))

    op.drop_table("api_keys")
    op.drop_table("owners")
