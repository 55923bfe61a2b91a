"""`zooscope encode`, `reconstruct` and `generate`: checkpoint files through a trained autoencoder.

Checkpoint files are read with `load_checkpoint` (safetensors, or torch zips with weights_only=True);
everything written is safetensors plus a JSON report. Results go to stdout, notes to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from zooscope.cli.common import dataset_of, err, fail, load_autoencoder, out, read_checkpoints, zoo_of
from zooscope.errors import ZooscopeError


def encode(
    checkpoints: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Checkpoint files."),
    ae_dir: Path = typer.Option(
        ..., "--ae", exists=True, file_okay=False, help="Trained autoencoder folder."
    ),
    out_path: Path | None = typer.Option(
        None, "--out", help="JSON file for the embeddings (default: stdout)."
    ),
    device: str = typer.Option("cpu", help="cpu, cuda, auto, ..."),
) -> None:
    """Embed checkpoints: one vector each (the mean of its token latents)."""
    try:
        ae = load_autoencoder(ae_dir, device)
        embeddings = ae.embed(read_checkpoints(checkpoints))
    except ZooscopeError as error:
        raise fail(error) from error
    data = {
        "autoencoder": str(ae_dir),
        "dimension": int(embeddings.shape[1]),
        "embeddings": {str(path): row.tolist() for path, row in zip(checkpoints, embeddings, strict=True)},
    }
    text = json.dumps(data, indent=2) + "\n"
    if out_path is None:
        typer.echo(text, nl=False)
    else:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text)
        err.print(f"{len(checkpoints)} embeddings of dimension {data['dimension']} written to {out_path}")


def reconstruct(
    checkpoints: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Checkpoint files."),
    ae_dir: Path = typer.Option(
        ..., "--ae", exists=True, file_okay=False, help="Trained autoencoder folder."
    ),
    out_dir: Path = typer.Option(..., "--out", help="Folder for the reconstructions and report.json."),
    dataset: str | None = typer.Option(
        None, help="Data set to evaluate on (default: the autoencoder's zoo's)."
    ),
    zoo: Path | None = typer.Option(None, help="Zoo folder, when the one the autoencoder recorded moved."),
    device: str = typer.Option("cpu", help="cpu, cuda, auto, ..."),
) -> None:
    """Reconstruct checkpoints, write them as safetensors and report fidelity against the originals."""
    from zooscope.analysis.evaluation import reconstruct_and_evaluate
    from zooscope.networks.checkpoints import save_checkpoint
    from zooscope.networks.parameters import unstack

    try:
        ae = load_autoencoder(ae_dir, device)
        state_dicts = read_checkpoints(checkpoints)
        data = dataset_of(ae, dataset, zoo)
        ids = [path.stem for path in checkpoints]
        result = reconstruct_and_evaluate(ae, state_dicts, data, ids)
    except ZooscopeError as error:
        raise fail(error) from error
    out_dir.mkdir(parents=True, exist_ok=True)
    assert result.reconstructed is not None  # evaluate_reconstructions always returns them
    files = []
    for path, rebuilt in zip(checkpoints, unstack(result.reconstructed), strict=True):
        target = out_dir / f"{path.stem}.reconstructed.safetensors"
        save_checkpoint(rebuilt, target, {"source": path.name, "autoencoder": str(ae_dir)})
        files.append(target.name)
    report = {**result.to_dict(), "autoencoder": str(ae_dir), "files": files}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")

    meta = result.metadata
    table = Table(title=f"reconstructions on {meta.get('dataset')} ({meta['n_test_inputs']} test inputs)")
    for column in (
        "checkpoint",
        "orig acc",
        "recon acc",
        "agreement",
        "struct L2",
        "struct L2 real",
        "behav dist",
    ):
        table.add_column(column, justify="left" if column == "checkpoint" else "right")
    for item in result.items:
        table.add_row(
            item.checkpoint_id,
            f"{item.original_accuracy:.1%}",
            f"{item.reconstructed_accuracy:.1%}",
            f"{item.agreement:.1%}",
            f"{item.structural_distance:.3f}",
            f"{item.structural_distance_real:.3f}",
            f"{item.behavioural_distance:.4f}",
        )
    out.print(table)
    err.print(f"{len(files)} reconstructions and report.json written to {out_dir}")


def generate(
    ae_dir: Path = typer.Option(
        ..., "--ae", exists=True, file_okay=False, help="Trained autoencoder folder."
    ),
    n: int = typer.Option(10, "--n", min=1, help="How many models to generate."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for the generated checkpoints and report.json."),
    bandwidth: str = typer.Option("scott", help="KDE bandwidth: 'scott' or a kernel standard deviation."),
    diversity: float = typer.Option(
        1.0,
        min=0.0,
        help="Bandwidth multiplier: 0 decodes the anchors, larger trades accuracy for diversity.",
    ),
    spread: float = typer.Option(
        1.0, min=0.0, help="Kernel centres' spread away from the anchors' mean: above 1 extrapolates."
    ),
    threshold: float | None = typer.Option(
        None, help="Anchors' minimum test accuracy (default: per data set)."
    ),
    seed: int = typer.Option(0, help="Seed of the sampling."),
    zoo: Path | None = typer.Option(
        None, help="Zoo whose good checkpoints are the anchors (default: the AE's)."
    ),
    device: str = typer.Option("cpu", help="cpu, cuda, auto, ..."),
) -> None:
    """Sample new models from the latent space around the zoo's good checkpoints."""
    from zooscope.analysis.generation import generate as generate_models
    from zooscope.networks.checkpoints import save_checkpoint
    from zooscope.networks.parameters import unstack

    try:
        width: float | str = bandwidth if bandwidth == "scott" else float(bandwidth)
    except ValueError as error:
        message = f"'scott' or a number, not {bandwidth!r}"
        raise typer.BadParameter(message, param_hint="--bandwidth") from error
    try:
        ae = load_autoencoder(ae_dir, device)
        result = generate_models(
            ae, zoo_of(ae, zoo), n_samples=n, accuracy_threshold=threshold, bandwidth=width,
            diversity=diversity, seed=seed, spread=spread,
        )  # fmt: skip
    except ZooscopeError as error:
        raise fail(error) from error
    out_dir.mkdir(parents=True, exist_ok=True)
    assert result.params is not None
    files = []
    made = zip(unstack(result.params), result.accuracies, result.activations, strict=True)
    for i, (sd, acc, activation) in enumerate(made):
        target = out_dir / f"generated_{i:04d}.safetensors"
        # the activation is its anchor's: in a zoo that mixes them the file alone would not tell
        metadata = {
            "autoencoder": str(ae_dir),
            "seed": str(seed),
            "test_acc": f"{acc:.6f}",
            "activation": activation,
        }
        save_checkpoint(sd, target, metadata)
        files.append(target.name)
    (out_dir / "report.json").write_text(
        json.dumps({**result.to_dict(), "autoencoder": str(ae_dir), "files": files}, indent=2) + "\n"
    )
    table = Table(title=f"{n} generated models")
    table.add_column("", justify="left")
    table.add_column("generated", justify="right")
    table.add_column(f"anchors (n={result.anchors['count']})", justify="right")
    acc, anchors = result.accuracy, result.anchors["accuracy"]
    gen_div, anchor_div = result.diversity["generated"], result.diversity["anchors"]

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    table.add_row("accuracy mean", pct(acc["mean"]), pct(anchors["mean"]))
    table.add_row("accuracy max", pct(acc["max"]), pct(anchors["max"]))
    table.add_row("accuracy min", pct(acc["min"]), pct(anchors["min"]))
    table.add_row("mean pairwise weight L2", num(gen_div["weight_l2"]), num(anchor_div["weight_l2"]))
    table.add_row("mean pairwise disagreement", pct(gen_div["disagreement"]), pct(anchor_div["disagreement"]))
    out.print(table)
    err.print(f"{len(files)} generated checkpoints and report.json written to {out_dir}")


def register(app: typer.Typer) -> None:
    """Adds this module's top-level commands to the main app."""
    app.command("encode")(encode)
    app.command("reconstruct")(reconstruct)
    app.command("generate")(generate)
