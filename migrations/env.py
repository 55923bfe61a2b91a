"""Alembic environment: the URL comes from app.db.migrate (programmatic) or from the settings."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from app.db.models import Base
from app.db.session import make_engine

config = context.config
if config.config_file_name is not None:  # the command line; programmatic runs keep app logging
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    url = config.attributes.get("database_url")
    if url:
        return url
    from app.settings import get_settings

    return get_settings().database_url


def run_migrations_offline() -> None:
    url = database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = database_url()
    if url.startswith("sqlite"):
        from pathlib import Path

        from sqlalchemy.engine import make_url

        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            # SQLite alters tables by copying them (batch mode).
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
