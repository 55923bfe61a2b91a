"""`zooscope ae ...`: train, inspect and evaluate weight-space autoencoders.

zooscope ae train --zoo /tmp/zoo-digits --out /tmp/ae-digits            # the CPU recipe
zooscope ae train --zoo Z --out A --beta 1                               # structure-only baseline
zooscope ae train --zoo Z --out A --resume                               # continue a stopped run
zooscope ae show /tmp/ae-digits
zooscope ae evaluate /tmp/ae-digits                                      # writes evaluation.json
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from zooscope.autoencoder.config import AUTOENCODER_PRESETS, DEFAULT_AUTOENCODER_PRESET
from zooscope.cli.common import err, fail, load_autoencoder, zoo_of
from zooscope.errors import ZooscopeError

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("train")
def train(
    zoo: Path = typer.Option(..., "--zoo", help="Zoo directory (zooscope zoo build / import)."),
    out: Path = typer.Option(..., "--out", help="Artefact directory to write."),
    preset: str = typer.Option(
        DEFAULT_AUTOENCODER_PRESET,
        "--preset",
        help=f"Model size and recipe: {' | '.join(AUTOENCODER_PRESETS)}.",
    ),
    latent_dim: int | None = typer.Option(
        None,
        "--latent-dim",
        min=1,
        help="Latent numbers per token (the preset's otherwise); small = a bottleneck.",
    ),
    contrast_on: str | None = typer.Option(
        None,
        "--contrast-on",
        help="What the contrastive head reads: flatten (the latent sequence, docs/method.md §3) | mean "
        "(the mean-pooled embedding that property prediction reads).",
    ),
    latent_activation: str | None = typer.Option(
        None,
        "--latent-activation",
        help="Nonlinearity on the per-token latent: none (docs/method.md §3, the paper preset) | relu "
        "(the cpu preset) | softplus.",
    ),
    encoder_final_norm: bool | None = typer.Option(
        None,
        "--encoder-final-norm/--no-encoder-final-norm",
        help="The encoder's closing LayerNorm before the latent map (on by default).",
    ),
    gamma: float | None = typer.Option(None, "--gamma", help="Weight of the contrastive loss."),
    beta: float | None = typer.Option(None, "--beta", help="Weight of STRUCTURE (1 = structure-only)."),
    statistics_weight: float | None = typer.Option(
        None,
        "--statistics-weight",
        help="Beyond docs/method.md: weight of a fourth term that asks the mean-pooled embedding to carry "
        "each layer's weight statistics (0 = the paper's C+S+B; the cpu preset uses 1).",
    ),
    statistics_weight_final: float | None = typer.Option(
        None,
        "--statistics-weight-final",
        help="Where the fourth term's weight ends: linear from --statistics-weight after the warm-up "
        "to this at the last epoch (default: constant).",
    ),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate."),
    epochs: int | None = typer.Option(None, "--epochs", help="Passes over the training checkpoints."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Checkpoints per step."),
    queries: int | None = typer.Option(None, "--queries", help="Query inputs per step for the behaviour."),
    query_source: str | None = typer.Option(
        None, "--query-source", help="train | uniform | gaussian | dataset:<name> (noise: uniform)."
    ),
    contrastive_views: str | None = typer.Option(
        None,
        "--contrastive-views",
        help="function_preserving (paper) | random (the second view breaks the function) | none (gamma 0).",
    ),
    warmup_epochs: int | None = typer.Option(
        None, "--warmup-epochs", help="Structure-first warm-up: epochs over which beta goes from 1 to --beta."
    ),
    lr_schedule: str | None = typer.Option(None, "--lr-schedule", help="none | cosine."),
    behavioural_loss: str | None = typer.Option(
        None, "--behavioural-loss", help="mse (paper) | mse_scaled | logits | kl."
    ),
    structural_loss: str | None = typer.Option(
        None,
        "--structural-loss",
        help="mse (paper) | relative (each checkpoint's error over its own tokens' mean square).",
    ),
    relu_gradient_slope: float | None = typer.Option(
        None,
        "--relu-gradient-slope",
        help="Gradient the behavioural term's ReLUs pass where they are off, in [0, 1) (0: torch's; "
        "values stay exact): dead reconstructions still get a gradient.",
    ),
    token_normalisation: str | None = typer.Option(
        None,
        "--token-normalisation",
        help="none | layer (per-layer standardisation, fitted on train) | tensor (per state_dict "
        "tensor: weights and biases apart).",
    ),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of initialisation, batches, views, queries."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the last training checkpoint in --out."
    ),
) -> None:
    """Train an autoencoder on a zoo with the composite loss (contrast + structure + behaviour)."""
    from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig
    from zooscope.autoencoder.training import train_autoencoder
    from zooscope.zoo.store import Zoo

    try:
        ae_config = AutoencoderConfig.preset(preset)
        ae_overrides = {
            "latent_dim": latent_dim,
            "contrast_on": contrast_on,
            "latent_activation": latent_activation,
            "encoder_final_norm": encoder_final_norm,
        }
        ae_config = dataclasses.replace(ae_config, **{k: v for k, v in ae_overrides.items() if v is not None})
        # Options not given are None: the preset's value stays.
        training_config = TrainingConfig.preset(preset).with_overrides(
            gamma=gamma,
            beta=beta,
            warmup_epochs=warmup_epochs,
            statistics_weight=statistics_weight,
            statistics_weight_final=statistics_weight_final,
            behavioural_loss=behavioural_loss,
            structural_loss=structural_loss,
            relu_gradient_slope=relu_gradient_slope,
            queries=queries,
            query_source=query_source,
            contrastive_views=contrastive_views,
            token_normalisation=token_normalisation,
            learning_rate=lr,
            batch_size=batch_size,
            epochs=epochs,
            lr_schedule=lr_schedule,
            seed=seed,
            device=device,
        )
        source = Zoo.open(zoo)
    except (ZooscopeError, ValueError) as error:
        raise fail(error) from error
    console.print(f"[bold]autoencoder[/bold] {preset}: {ae_config}")
    console.print(f"[bold]training[/bold]: {training_config}")
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("training", total=1.0)

        def on_progress(fraction: float, message: str) -> None:
            bar.update(task, completed=fraction, description=message or "training")

        try:
            trained = train_autoencoder(
                source,
                ae_config,
                training_config,
                out,
                progress=on_progress,
                resume=resume,
                log=lambda line: bar.console.print(line),
            )
        except (ZooscopeError, ValueError) as error:
            raise fail(error) from error
    console.print(f"wrote {out} ({trained.model.n_parameters:,} parameters)")
    _print_summary(trained.training_log)


@app.command("show")
def show(
    directory: Path = typer.Argument(..., help="Autoencoder artefact directory."),
    every: int = typer.Option(0, "--every", help="Show every Nth epoch (0: about 15 rows)."),
) -> None:
    """Print an autoencoder's configuration and a summary of its training curves."""
    from zooscope.autoencoder.artefact import TrainedAutoencoder

    try:
        ae = TrainedAutoencoder.load(directory)
    except ZooscopeError as error:
        raise fail(error) from error
    meta = ae.describe()
    console.print(f"[bold]{directory}[/bold]: {ae.architecture.name}, {meta['n_parameters']:,} parameters")
    console.print(f"tokens {ae.token_layout.n_tokens} x {ae.token_layout.width}, code {meta['code_version']}")
    console.print(f"autoencoder: {ae.config}")
    if ae.training_config is not None:
        console.print(f"training: {ae.training_config}")
    if ae.zoo:
        console.print(f"zoo: {ae.zoo}")
    _print_summary(ae.training_log, every)
    if ae.evaluation:
        aggregate = ae.evaluation.get("aggregate", ae.evaluation)
        console.print(f"evaluation: {aggregate}")


def _cell(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _print_summary(log: list[dict[str, Any]], every: int = 0) -> None:
    if not log:
        console.print("no training log")
        return
    step = every or max(1, len(log) // 15)
    rows = [e for i, e in enumerate(log) if i % step == 0 or i == len(log) - 1]
    table = Table(title="training curves")
    for name in (
        "epoch",
        "beta",
        "loss",
        "C",
        "S",
        "B",
        "val agree",
        "val recon acc",
        "val orig acc",
        "s/epoch",
    ):
        table.add_column(name, justify="right")
    for e in rows:
        table.add_row(
            str(e["epoch"]),
            _cell(e.get("beta"), ".3f"),
            _cell(e.get("loss"), ".4f"),
            _cell(e.get("contrastive"), ".4f"),
            _cell(e.get("structural"), ".3g"),
            _cell(e.get("behavioural"), ".3g"),
            _cell(e.get("val_agreement"), ".1%"),
            _cell(e.get("val_reconstructed_accuracy"), ".1%"),
            _cell(e.get("val_original_accuracy"), ".1%"),
            _cell(e.get("seconds"), ".1f"),
        )
    console.print(table)
    collapsed = [e["epoch"] for e in log if e.get("collapse")]
    if collapsed:
        console.print(f"[bold red]COLLAPSE[/bold red] flagged at epochs {collapsed}")


@app.command("evaluate")
def evaluate(
    ae_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Trained autoencoder folder."),
    split: str = typer.Option("test", help="Which split of the zoo to reconstruct: train, val or test."),
    zoo: Path | None = typer.Option(None, help="Zoo folder, when the one the autoencoder recorded moved."),
    device: str = typer.Option("cpu", help="cpu, cuda, auto, ..."),
) -> None:
    """Reconstruct a split of the autoencoder's zoo and write evaluation.json into its folder."""
    from zooscope.analysis.evaluation import evaluate_autoencoder

    if split not in ("train", "val", "test"):
        raise typer.BadParameter(f"train, val or test, not {split!r}", param_hint="--split")
    try:
        ae = load_autoencoder(ae_dir, device)
        result = evaluate_autoencoder(ae, zoo_of(ae, zoo), split)
    except ZooscopeError as error:
        raise fail(error) from error
    path = ae.save_evaluation(result.to_dict(), ae_dir)
    title = f"{len(result.items)} {split} checkpoints reconstructed"
    console.print(_aggregate_table(title, result.aggregate))
    err.print(f"report written to {path}")


def _aggregate_table(title: str, aggregate: dict[str, Any]) -> Table:
    """The mean/std/max/min of each metric of a reconstruction report."""
    from zooscope.analysis.evaluation import METRICS

    table = Table(title=title)
    for column in ("metric", "mean", "std", "max", "min"):
        table.add_column(column, justify="left" if column == "metric" else "right")

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    for metric in (*METRICS, "agreement_high_accuracy"):
        s = aggregate[metric]
        label = (
            metric if metric in METRICS else f"agreement, originals >= {s['threshold']:.0%} (n={s['count']})"
        )
        table.add_row(label, *(fmt(s[k]) for k in ("mean", "std", "max", "min")))
    specific = aggregate.get("specificity")
    if specific and specific["other_originals"] is not None:  # a split of one model has no others
        for label, key in (
            ("agreement, other models' originals", "other_originals"),
            ("originals' agreement with each other", "originals_with_each_other"),
        ):
            table.add_row(label, fmt(specific[key]), "", "", "")
    return table
