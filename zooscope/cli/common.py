"""What the `zooscope` command groups share: the two consoles, the exit codes and the one way an
error ends a command, and the loaders of autoencoders, zoos, data sets and checkpoint files.

Output a script may parse (JSON, tables) goes to stdout; errors, progress and notes go to
stderr. Every command that fails prints `error: <message>` on stderr and exits with an ExitCode.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from zooscope.errors import ZooscopeError

out = Console()
err = Console(stderr=True)


class ExitCode(IntEnum):
    """The exit codes of every zooscope command (docs/client.md lists them for the client)."""

    OK = 0
    FAILED = 1  # the command could not do its work (a bad zoo, artefact or checkpoint; a failed job)
    USAGE = 2  # a bad option or argument: what click itself returns, and what we return for ours
    API_ERROR = 3  # the service answered with an error (client commands)
    CONNECTION = 4  # the service could not be reached (client commands)
    TIMEOUT = 5  # the service did not answer in time (client commands)


def fail(error: Exception | str, code: ExitCode = ExitCode.FAILED, label: str = "error") -> typer.Exit:
    """Print `label: error` on stderr and return the typer.Exit to raise: `raise fail(e) from e`."""
    err.print(f"[red]{label}:[/red] {escape(str(error))}", highlight=False)
    return typer.Exit(code)


def load_autoencoder(directory: Path, device: str) -> Any:
    from zooscope.autoencoder.artefact import TrainedAutoencoder
    from zooscope.autoencoder.training import resolve_device

    return TrainedAutoencoder.load(directory, resolve_device(device))


def zoo_of(ae: Any, zoo: Path | None) -> Any:
    """The zoo given, or the one the autoencoder was trained on (recorded in its config.json)."""
    from zooscope.zoo.store import Zoo

    path = zoo or (Path(ae.zoo["path"]) if ae.zoo and ae.zoo.get("path") else None)
    if path is None or not path.exists():
        raise ZooscopeError(
            f"the autoencoder's zoo ({path or 'not recorded'}) is not on this machine: pass --zoo DIR"
        )
    return Zoo.open(path)


def dataset_of(ae: Any, name: str | None, zoo: Path | None) -> Any:
    """The data set to evaluate on: --dataset, else the autoencoder's zoo's data set."""
    if name is not None:
        from zooscope.networks.datasets import load_dataset

        return load_dataset(name)
    return zoo_of(ae, zoo).dataset()


def read_checkpoints(paths: list[Path]) -> list[dict]:
    from zooscope.networks.checkpoints import load_checkpoint

    return [load_checkpoint(path) for path in paths]
