"""The `zooscope` command. Each command group lives in its own module of this package."""

from __future__ import annotations

import typer

from zooscope.cli import autoencoder, client, experiment, models, serve, zoo

app = typer.Typer(
    help="zooscope: model zoos and a behaviour-aware weight-space autoencoder.", no_args_is_help=True
)
app.add_typer(zoo.app, name="zoo", help="Build, import and inspect model zoos.")
app.add_typer(autoencoder.app, name="ae", help="Train, inspect and evaluate weight-space autoencoders.")
app.add_typer(experiment.app, name="experiment", help="Reproduction experiments (ablations).")
app.add_typer(client.app, name="client", help="Talk to a running zooscope service over HTTP.")
models.register(app)  # top-level encode / reconstruct / generate
serve.register(app)  # top-level serve / keys


def main() -> None:
    app()
