"""`zooscope serve`: the embedded run mode (API + a real Celery worker on one machine).

The library must not import fastapi/celery/sqlalchemy at import time, so the command imports the
service (`worker.embedded`, which imports `app`) only when it runs.
"""

from __future__ import annotations

from pathlib import Path

import typer


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
    # A pass-through to the service's own command group (app/keys_cli.py), imported only now.
    from app.keys_cli import app as keys_app

    command = typer.main.get_command(keys_app)
    command.main(args=list(ctx.args), prog_name="zooscope keys", standalone_mode=True)


def register(app: typer.Typer) -> None:
    """Adds this module's top-level commands to the main app."""
    app.command("serve")(serve)
    app.command(
        "keys",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )(keys)
