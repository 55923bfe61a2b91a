"""`zooscope ae evaluate DIR`: the reconstruction report of a trained autoencoder on its zoo.

Kept apart from cli/autoencoder.py (train/show) so the two can change independently; that module
registers this command on its `ae` group with `ae_evaluate.register(app)`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from zooscope.cli.models import aggregate_table, err, fail, load_autoencoder, out, zoo_of
from zooscope.errors import ZooscopeError


def evaluate(
    ae_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Trained autoencoder folder."),
    split: str = typer.Option("test", help="Which split of the zoo to reconstruct: train, val or test."),
    zoo: Path | None = typer.Option(None, help="Zoo folder, when the one the autoencoder recorded moved."),
    device: str = typer.Option("cpu", help="cpu, cuda, auto, ..."),
) -> None:
    """Reconstruct a split of the autoencoder's zoo and write evaluation.json into its folder."""
    from zooscope.analysis.evaluation import evaluate_autoencoder

    if split not in ("train", "val", "test"):
        raise fail(ValueError(f"--split must be train, val or test, not {split!r}"))
    try:
        ae = load_autoencoder(ae_dir, device)
        result = evaluate_autoencoder(ae, zoo_of(ae, zoo), split)
    except ZooscopeError as error:
        raise fail(error) from error
    path = ae.save_evaluation(result.to_dict(), ae_dir)
    out.print(aggregate_table(f"{len(result.items)} {split} checkpoints reconstructed", result.aggregate))
    err.print(f"report written to {path}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
