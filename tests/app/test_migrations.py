"""Migrations run up and down on both databases, and the models match what they create."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from app.db.migrate import current_revision, downgrade_to_base, upgrade_to_head
from app.db.models import Base
from app.db.session import make_engine

TABLES = {"owners", "api_keys", "checkpoints", "zoos", "autoencoders", "jobs"}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_upgrade_downgrade_upgrade(backend: str, request: pytest.FixtureRequest) -> None:
    factory: Callable[[], str] = request.getfixturevalue(f"{backend}_database_factory")
    url = factory()
    upgrade_to_head(url)
    engine = make_engine(url)
    try:
        assert TABLES <= set(inspect(engine).get_table_names())
        assert current_revision(url) is not None
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == [], f"the models and the migrations disagree: {diff}"

        downgrade_to_base(url)
        assert not TABLES & set(inspect(engine).get_table_names())
        assert current_revision(url) is None

        upgrade_to_head(url)  # and again: a downgrade leaves nothing behind that blocks it
        assert TABLES <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
