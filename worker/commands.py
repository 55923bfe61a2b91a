"""The service's commands in the `zooscope` CLI, registered through the `zooscope.commands`
entry points of pyproject.toml: the library's CLI finds them there and never imports app/ or
worker/ itself.

This module stays light (typer only): it is loaded at every `zooscope` start. It checks that
the service's packages are installed and raises ImportError if not, which the CLI turns into a
command that says how to install them. The service itself is imported when a command runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer

# Import names of the packages the `service` extra installs that the commands need.
SERVICE_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "celery", "pydantic_settings")

_missing = [name for name in SERVICE_MODULES if importlib.util.find_spec(name) is None]
if _missing:
    raise ModuleNotFoundError(f"the service's packages are not installed (missing: {', '.join(_missing)})")


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on; 127.0.0.1 keeps the service local."),
    port: int = typer.Option(8000, help="Port of the HTTP API and dashboard."),
    data_dir: Path = typer.Option(
        Path("./data"), help="Folder for the SQLite database, the local broker, blobs, zoos and models."
    ),
    bootstrap_models: bool = typer.Option(
        True,
        "--bootstrap-models/--no-bootstrap-models",
        help="On first start, build the default digits zoo and autoencoder (as jobs) if missing. "
        "ZOOSCOPE_DEFAULT_PRESET=tiny makes them small (for tests and demos).",
    ),
    shutdown_timeout: float = typer.Option(
        10.0,
        help="Seconds to let a running job finish on Ctrl-C before the worker is killed "
        "(a killed job is re-run on the next start).",
    ),
) -> None:
    """Start the API and a worker with no services to install (SQLite + a broker file under DATA_DIR)."""
    from worker.embedded import EmbeddedOptions, run_embedded

    raise typer.Exit(
        run_embedded(
            EmbeddedOptions(
                host=host,
                port=port,
                data_dir=data_dir.expanduser().resolve(),
                bootstrap_models=bootstrap_models,
                shutdown_timeout=shutdown_timeout,
            )
        )
    )


def keys(ctx: typer.Context) -> None:
    """Manage API keys on the server: create --name NAME | list | revoke KEY (see keys --help)."""
    # A pass-through to the service's own command group (app/cli.py), imported only now.
    from app.cli import app as keys_app

    command = typer.main.get_command(keys_app)
    command.main(args=list(ctx.args), prog_name="zooscope keys", standalone_mode=True)


def register_serve(app: typer.Typer) -> None:
    app.command("serve")(serve)


def register_keys(app: typer.Typer) -> None:
    app.command(
        "keys",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )(keys)
