"""`zooscope experiment ablation`: the paper's structure / behaviour ablation, written to docs/results.md.

Needs only the library's own dependencies (torch, numpy, sklearn): it runs on a bare GPU machine.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from zooscope.autoencoder.config import AUTOENCODER_PRESETS, DEFAULT_AUTOENCODER_PRESET
from zooscope.cli.common import err, fail
from zooscope.errors import ZooscopeError

app = typer.Typer(no_args_is_help=True)


@app.command("ablation")
def ablation(
    zoo: Path | None = typer.Option(
        None,
        exists=True,
        file_okay=False,
        help="Zoo folder (default: the default digits zoo under --data-dir).",
    ),
    data_dir: Path = typer.Option(
        Path("./data"), help="Where the default zoo lives or is built (zoos/default)."
    ),
    preset: str = typer.Option(
        DEFAULT_AUTOENCODER_PRESET, help=f"Autoencoder and training preset: {', '.join(AUTOENCODER_PRESETS)}."
    ),
    epochs: int | None = typer.Option(
        None, min=1, help="Training epochs of every configuration (default: preset's)."
    ),
    out: Path = typer.Option(
        Path("./runs/ablation"), help="Folder for the trained autoencoders and results.json."
    ),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu, cuda, cuda:1, ..."),
    configs: str | None = typer.Option(
        None,
        help="Comma-separated subset of structure, behaviour, csb, csb_noise, csb_stats, "
        "structure_stats (default: experiment.DEFAULT_CONFIGS: all but csb_noise and structure_stats).",
    ),
    query_ablation: bool = typer.Option(
        False, "--query-ablation", help="Also run C+S+B with uniform-noise queries."
    ),
    results_path: Path = typer.Option(
        Path("docs/results.md"), help="Markdown results page (results.json beside it)."
    ),
    seed: int = typer.Option(0, help="Seed of every configuration."),
    n_generate: int = typer.Option(100, min=2, help="Models generated per configuration."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue each configuration from its last training checkpoint under --out."
    ),
    latent_dim: int | None = typer.Option(
        None,
        min=1,
        help="Latent width per token (default: the preset's). Narrower makes the latent a bottleneck.",
    ),
) -> None:
    """Train structure-only, behaviour-only, C+S+B and the cpu recipe on the same budget and compare them."""
    from zooscope.experiments.ablation import DEFAULT_CONFIGS, open_or_build_zoo, run_ablation

    names = list(DEFAULT_CONFIGS) if configs is None else [c.strip() for c in configs.split(",") if c.strip()]
    command = "zooscope " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(), console=err
    ) as bar:
        task = bar.add_task("ablation", total=1.0)

        def progress(fraction: float, message: str = "") -> None:
            bar.update(task, completed=fraction, description=message[:60] or "ablation")

        try:
            from zooscope.autoencoder.training import resolve_device

            zoo_obj = open_or_build_zoo(
                zoo, data_dir, log=bar.console.print, device=str(resolve_device(device))
            )
            results = run_ablation(
                zoo_obj, out, preset=preset, epochs=epochs, configs=names, query_ablation=query_ablation,
                device=device, seed=seed, n_generate=n_generate, results_path=results_path, command=command,
                progress=progress, log=bar.console.print, resume=resume, latent_dim=latent_dim,
            )  # fmt: skip
        except (ZooscopeError, ValueError) as error:
            raise fail(error) from error
    for name, result in results["configs"].items():
        agg = result["evaluation"]
        err.print(
            f"{name}: agreement {agg['agreement']['mean']:.1%}, recon acc max "
            f"{agg['reconstructed_accuracy']['max']:.1%} (orig {agg['original_accuracy']['max']:.1%}), "
            f"{result['timings']['seconds_per_epoch'] or 0:.1f} s/epoch"
        )
    from zooscope.experiments.targets import TARGET_CONFIGS, verdict

    for name in (n for n in TARGET_CONFIGS if n in results["configs"]):
        err.print(f"{name}: {verdict(results, name)}", highlight=False)
    err.print(f"results written to {results_path} and {Path(out) / 'results.json'}")
