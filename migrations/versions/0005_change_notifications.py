"""PostgreSQL: NOTIFY on every visible change of a job and on every change of an API key

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

The API keeps answers to job polls in memory (app/api/answers.py) and drops them when these
notifications say the rows under them changed. Triggers rather than NOTIFY statements in the
application, so that no write to these tables can skip them, whichever process or tool makes it.
The channel names are app.db.jobs.JOB_CHANGED_CHANNEL and app.db.owners.KEY_CHANGED_CHANNEL (a
migration keeps its own copy of what it wrote).
SQLite has no notifications: nothing to do there.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The payload is "<job id> <what>": "state" for a new or deleted job, or a change of its state or
# owner (what a listing's membership and every client's view depend on), "progress" for any
# other visible change (its revision went up: progress, message, ETA).
JOB_TRIGGER = (
    """
CREATE OR REPLACE FUNCTION zooscope_notify_job_changed() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('zooscope_job_changed', OLD.id || ' state');
        RETURN OLD;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state
            OR NEW.owner_id IS DISTINCT FROM OLD.owner_id THEN
        PERFORM pg_notify('zooscope_job_changed', NEW.id || ' state');
    ELSIF NEW.revision IS DISTINCT FROM OLD.revision THEN
        PERFORM pg_notify('zooscope_job_changed', NEW.id || ' progress');
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql
""",
    """
CREATE TRIGGER zooscope_job_changed AFTER INSERT OR UPDATE OR DELETE ON jobs
    FOR EACH ROW EXECUTE FUNCTION zooscope_notify_job_changed()
""",
)

# A key revoked, re-owned or deleted: whose answers a key may read changed. A new key changes
# nothing kept (an unknown key's requests are never kept).
KEY_TRIGGER = (
    """
CREATE OR REPLACE FUNCTION zooscope_notify_key_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('zooscope_key_changed', '');
    RETURN NULL;
END
$$ LANGUAGE plpgsql
""",
    """
CREATE TRIGGER zooscope_key_changed AFTER UPDATE OR DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION zooscope_notify_key_changed()
""",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in (*JOB_TRIGGER, *KEY_TRIGGER):  # one statement an execute (psycopg)
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS zooscope_key_changed ON api_keys")
        op.execute("DROP FUNCTION IF EXISTS zooscope_notify_key_changed()")
        op.execute("DROP TRIGGER IF EXISTS zooscope_job_changed ON jobs")
        op.execute("DROP FUNCTION IF EXISTS zooscope_notify_job_changed()")
