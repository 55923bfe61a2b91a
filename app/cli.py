"""`zooscope keys create|list|revoke`: API keys, managed on the server against its database.

The key is printed once at creation; the database keeps only its sha256.
"""

from __future__ import annotations

import typer

from app.db.migrate import upgrade_to_head
from app.db.owners import create_key, list_keys, revoke_key
from app.db.session import make_engine, session_scope
from app.settings import Settings

app = typer.Typer(help="Manage API keys (stored hashed; a key is shown once).", no_args_is_help=True)

DatabaseOption = typer.Option(None, "--database-url", help="default: ZOOSCOPE_DATABASE_URL / the data dir")


def _engine(database_url: str | None):  # noqa: ANN202 - an Engine; keeps the import local
    url = database_url or Settings().database_url
    upgrade_to_head(url)  # keys may be made before the API ever started
    return make_engine(url)


@app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="the owner's name (created if new)"),
    database_url: str | None = DatabaseOption,
) -> None:
    """Create a key for NAME and print it (the only time it is shown)."""
    engine = _engine(database_url)
    with session_scope(engine) as session:
        row, key = create_key(session, name)
        typer.echo(key)
        typer.echo(
            f"key {row.prefix}... for owner {name!r} (id {row.id}); store it now, it is not shown again",
            err=True,
        )
    engine.dispose()


@app.command("list")
def list_(database_url: str | None = DatabaseOption) -> None:
    """Keys with their owner, prefix and state (never the keys themselves)."""
    engine = _engine(database_url)
    with session_scope(engine) as session:
        rows = list_keys(session)
        if not rows:
            typer.echo("no keys")
        for key, owner in rows:
            state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            typer.echo(
                f"{key.id}  {key.prefix}...  {owner.name}  created {key.created_at:%Y-%m-%d %H:%M}  {state}"
            )
    engine.dispose()


@app.command("revoke")
def revoke(
    key: str = typer.Argument(..., help="the key's id or its prefix as `keys list` shows it"),
    database_url: str | None = DatabaseOption,
) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    engine = _engine(database_url)
    with session_scope(engine) as session:
        row = revoke_key(session, key)
        if row is None:
            typer.echo(f"no key with id or prefix {key!r}; see `zooscope keys list`", err=True)
            raise typer.Exit(1)
        typer.echo(f"revoked {row.prefix}... ({row.id})")
    engine.dispose()
