"""The `zooscope` command. Each command group lives in its own module of this package (zoo.py,
autoencoder.py for `ae`, experiment.py, client.py; checkpoints.py holds the top-level `encode`,
`reconstruct` and `generate`); common.py holds what they share, errors and exit codes included.

Other installed packages add commands through the `zooscope.commands` entry-point group (the
service adds `serve` and `keys`, worker/commands.py); the library never imports them itself.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from zooscope.cli import autoencoder, checkpoints, client, experiment, zoo
from zooscope.cli.common import ExitCode, fail

COMMAND_PLUGINS = "zooscope.commands"  # entry-point group: name -> register(app: typer.Typer)
SERVICE_INSTALL_HINT = "pip install 'zooscope[service]'"

app = typer.Typer(
    help="zooscope: model zoos and a behaviour-aware weight-space autoencoder.", no_args_is_help=True
)
app.add_typer(zoo.app, name="zoo", help="Build, import and inspect model zoos.")
app.add_typer(autoencoder.app, name="ae", help="Train, inspect and evaluate weight-space autoencoders.")
app.add_typer(
    experiment.app,
    name="experiment",
    help="The paper's experiments on one zoo: ablation, queries, beta, views, sensitivity.",
)
app.add_typer(client.app, name="client", help="Talk to a running zooscope service over HTTP.")
checkpoints.register(app)  # top-level encode / reconstruct / generate


def _unavailable(name: str, reason: str) -> None:
    """A command whose package cannot be loaded: it says why and how to install it."""

    def command() -> None:
        message = f"zooscope {name} is not available: {reason}. Install it with: {SERVICE_INSTALL_HINT}"
        raise fail(message, ExitCode.USAGE)

    command.__doc__ = f"(not installed: {SERVICE_INSTALL_HINT})"
    app.command(name, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(command)


def _register_plugins() -> None:
    for plugin in entry_points(group=COMMAND_PLUGINS):
        try:
            register = plugin.load()
        except ImportError as error:
            _unavailable(plugin.name, str(error))
        else:
            register(app)


_register_plugins()


def main() -> None:
    app()
