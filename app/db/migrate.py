"""Run the Alembic migrations from code: the API applies them on start, tests run them both ways."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

# The repository's migrations/ folder (app/ and migrations/ are siblings).
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # env.py reads this attribute before falling back to the settings; no '%' interpolation issues.
    config.attributes["database_url"] = url
    return config


def upgrade_to_head(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


def downgrade_to_base(url: str) -> None:
    command.downgrade(alembic_config(url), "base")


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from app.db.session import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
