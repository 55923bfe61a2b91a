"""`zooscope zoo ...`: build, import and inspect model zoos."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from zooscope.cli.common import fail
from zooscope.errors import ZooscopeError
from zooscope.zoo.presets import DEFAULT_ZOO_PRESET, ZOO_PRESETS

app = typer.Typer(no_args_is_help=True)
console = Console()


@contextmanager
def _progress_bar(description: str) -> Iterator[Callable[[float, str], None]]:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[message]}"),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(description, total=1.0, message="")

        def on_progress(fraction: float, message: str = "") -> None:
            bar.update(task, completed=fraction, message=message)

        yield on_progress


def _floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}") from error


def _integers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise typer.BadParameter(f"expected comma-separated whole numbers, got {text!r}") from error


@app.command()
def build(
    out: Path = typer.Option(..., "--out", help="New (or empty) folder to write the zoo into."),
    dataset: str | None = typer.Option(
        None, help="Data set name (zooscope.networks.datasets.DATASETS); default: the preset's."
    ),
    preset: str = typer.Option(
        DEFAULT_ZOO_PRESET,
        help=f"{' | '.join(ZOO_PRESETS)}: the 360-model digits grid, its 60-model one-seed stand-in, "
        "12 models in seconds, 96 CNN-s models on real MNIST images (needs the mnist extra), 96 of "
        "them from Kaiming inits only (every one trains), the same from one init draw per scheme, 12 "
        "in seconds, or the paper's 1,200 CNN3 models.",
    ),
    seeds: int | None = typer.Option(None, help="Models per grid cell."),
    epochs: int | None = typer.Option(None, help="Training epochs (later checkpoint epochs are dropped)."),
    checkpoint_epochs: str | None = typer.Option(
        None,
        help="Comma-separated epochs whose weights are kept, 0 the init, e.g. 1,2,4,8,24: early "
        "epochs widen the zoo's range of accuracies (default: the preset's).",
    ),
    inits: str | None = typer.Option(None, help="Comma-separated init schemes, e.g. kaiming_uniform,normal."),
    lrs: str | None = typer.Option(None, help="Comma-separated learning rates."),
    wds: str | None = typer.Option(None, help="Comma-separated weight decays."),
    seed: int | None = typer.Option(None, help="Zoo seed: inits, data orders and the model split."),
    shared_init: bool | None = typer.Option(
        None,
        "--shared-init/--own-init",
        help="Every model of an init scheme starts from one draw (default: the preset's; most "
        "presets give each model its own).",
    ),
    resize: int | None = typer.Option(None, help="Resize images to this many pixels a side."),
    architecture: str | None = typer.Option(None, help="Architecture family: cnn_digits, cnn_s or cnn3."),
    data_root: Path | None = typer.Option(None, help="Where local data sets live."),
) -> None:
    """Train a zoo over a hyperparameter grid and write it to OUT."""
    from zooscope.networks.architectures import Architecture
    from zooscope.networks.datasets import load_dataset
    from zooscope.zoo.grid import ZooConfig
    from zooscope.zoo.store import build_zoo

    try:
        config = ZooConfig.preset(preset, **({"dataset": dataset} if dataset else {}))
        if epochs is not None:
            config = config.with_epochs(epochs)
        changes: dict[str, Any] = {}
        if seeds is not None:
            changes["n_seeds"] = seeds
        if inits is not None:
            changes["inits"] = tuple(part.strip() for part in inits.split(",") if part.strip())
        for name, text in (("learning_rates", lrs), ("weight_decays", wds)):
            values = _floats(text)
            if values is not None:
                changes[name] = values
        if seed is not None:
            changes["seed"] = seed
        if checkpoint_epochs is not None:
            changes["checkpoint_epochs"] = _integers(checkpoint_epochs)
        if shared_init is not None:
            changes["shared_init"] = shared_init
        if resize is not None:
            changes["resize"] = resize
        data = load_dataset(
            config.dataset, data_root, resize=resize, seed=seed if seed is not None else config.seed
        )
        if architecture is not None or tuple(data.input_shape) != config.architecture.input_shape:
            family = architecture or config.architecture.family
            channels, size, _ = data.input_shape
            changes["architecture"] = Architecture(family, channels, size, n_classes=data.n_classes)
        config = config.replace(**changes)
        console.print(
            f"[bold]zoo[/bold]: {config.n_models} models of {config.architecture.name} on {config.dataset}, "
            f"{config.epochs} epochs, checkpoints at {list(config.checkpoint_epochs)}"
        )
        with _progress_bar("building") as on_progress:
            zoo = build_zoo(config, out, on_progress, dataset=data)
    except (ZooscopeError, ValueError) as error:
        raise fail(error) from error
    console.print(f"wrote {zoo.root} in {zoo.manifest['source'].get('train_seconds', 0):.0f} s of training")
    _print_summary(zoo)


@app.command()
def show(directory: Path = typer.Argument(..., help="A zoo folder.")) -> None:
    """Describe a zoo: size, splits, divergences, accuracy by epoch and by hyperparameter."""
    from zooscope.zoo.store import Zoo

    try:
        zoo = Zoo.open(directory)
    except ZooscopeError as error:
        raise fail(error) from error
    manifest = zoo.manifest
    console.print(f"[bold]{zoo.root}[/bold]: {zoo.architecture.name} ({zoo.architecture.activation})")
    console.print(
        f"data set {manifest['dataset'].get('name')}, created {manifest.get('created_at')}, "
        f"code {manifest.get('code_version')}, seed {manifest.get('seed')}"
    )
    _print_summary(zoo)


@app.command("import")
def import_(
    path: Path = typer.Argument(..., help="A folder in the public Model Zoos layout."),
    out: Path = typer.Option(..., "--out", help="New (or empty) folder to write the zoo into."),
    epochs: str | None = typer.Option(None, help="Comma-separated checkpoint epochs to keep (default: all)."),
    dataset: str | None = typer.Option(None, help="The zoo's data set, when params.json does not tell."),
) -> None:
    """Convert a public Model Zoos folder into a zoo; list the models that had to be skipped."""
    from zooscope.zoo.import_public import import_public_zoo

    try:
        kept = list(_integers(epochs)) if epochs is not None else None
        with _progress_bar("importing") as on_progress:
            result = import_public_zoo(path, out, epochs=kept, progress=on_progress, dataset=dataset)
    except (ZooscopeError, ValueError) as error:
        raise fail(error) from error
    console.print(f"imported {len(result.zoo.models)} models into {result.zoo.root}")
    manifest = result.zoo.manifest
    if manifest.get("mixed_activations"):
        counts = ", ".join(f"{name} {n}" for name, n in manifest["activations"].items())
        console.print(f"the models mix activations ({counts}); each runs with its own")
    if len(manifest["source"].get("key_layouts", [])) > 1:
        layouts = ", ".join(manifest["source"]["key_layouts"])
        console.print(f"checkpoints came in {layouts}; stored as {result.zoo.architecture.name}")
    if result.skipped:
        table = Table(title=f"skipped {len(result.skipped)} models")
        table.add_column("model folder")
        table.add_column("reason")
        for model, reason in result.skipped:
            table.add_row(model, reason)
        console.print(table)
    _print_summary(result.zoo)


def _print_summary(zoo: Any) -> None:
    from zooscope.zoo.summary import summarise

    summary = summarise(zoo)
    splits = ", ".join(f"{k} {v}" for k, v in sorted(summary.models_per_split.items()))
    console.print(f"{summary.n_models} models ({splits}), {summary.n_checkpoints} checkpoints")
    if summary.n_diverged:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in summary.diverged_reasons.items())
        console.print(f"[yellow]{summary.n_diverged} diverged[/yellow] (kept, flagged): {reasons}")
    else:
        console.print("no model diverged")

    by_epoch = Table(title="test accuracy by epoch")
    for column in ("epoch", "models", "mean", "std", "min", "median", "max"):
        by_epoch.add_column(column, justify="right")
    for epoch, d in summary.test_acc_by_epoch.items():
        stats = (d.mean, d.std, d.min, d.median, d.max)
        by_epoch.add_row(str(epoch), str(d.count), *(_pct(v) for v in stats))
    console.print(by_epoch)

    by_hyper = Table(title=f"test accuracy at epoch {summary.last_epoch} by hyperparameter")
    for column in ("hyperparameter", "value", "models", "mean", "min", "max"):
        by_hyper.add_column(column, justify="right" if column not in ("hyperparameter", "value") else "left")
    for name, groups in summary.test_acc_by_hyperparameter.items():
        for value, d in groups.items():
            by_hyper.add_row(name, value, str(d.count), *(_pct(v) for v in (d.mean, d.min, d.max)))
    console.print(by_hyper)


def _pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.1f}%"  # NaN != NaN
