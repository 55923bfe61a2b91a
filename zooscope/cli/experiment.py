"""`zooscope experiment ...`: the paper's experiments, each trained on one zoo and written up as a
results page (markdown, with its results.json beside it; docs/experiments.md lists them):

  ablation     structure-only, behaviour-only, C+S+B and the cpu recipe (docs/results.md)
  queries      the query source of the behavioural loss (docs/method.md §9.1)
  beta         beta, the weight of structure, on the validation split (§9.2)
  views        the contrastive views (§9.3)
  sensitivity  where the first-order account of the function stops holding (§9.4)

Needs only the library's own dependencies (torch, numpy, sklearn): it runs on a bare GPU machine.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from zooscope.autoencoder.config import AUTOENCODER_PRESETS, DEFAULT_AUTOENCODER_PRESET
from zooscope.cli.common import err, fail
from zooscope.errors import ZooscopeError

app = typer.Typer(no_args_is_help=True)

# The options every experiment takes, declared once.
ZOO = typer.Option(
    None, exists=True, file_okay=False, help="Zoo folder (default: the default digits zoo under --data-dir)."
)
DATA_DIR = typer.Option(Path("./data"), help="Where the default zoo lives or is built (zoos/default).")
PRESET = typer.Option(
    DEFAULT_AUTOENCODER_PRESET, help=f"Autoencoder and training preset: {', '.join(AUTOENCODER_PRESETS)}."
)
EPOCHS = typer.Option(None, min=1, help="Training epochs of every configuration (default: preset's).")
DEVICE = typer.Option("auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
SEED = typer.Option(0, help="Seed of every configuration.")
N_GENERATE = typer.Option(100, min=2, help="Models generated per configuration.")
RESUME = typer.Option(
    False, "--resume", help="Continue each configuration from its last training checkpoint under --out."
)
LATENT_DIM = typer.Option(
    None,
    min=1,
    help="Latent width per token (default: the preset's). Narrower makes the latent a bottleneck.",
)


def _out(name: str) -> Any:
    return typer.Option(Path(f"./runs/{name}"), help="Folder for the trained autoencoders and results.json.")


def _results_path(page: str) -> Any:
    return typer.Option(Path(f"docs/{page}"), help="Markdown results page (results.json beside it).")


def _command() -> str:
    return "zooscope " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _numbers(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise typer.BadParameter(
            f"expected comma-separated numbers, got {text!r}", param_hint=option
        ) from error


def _run(label: str, zoo: Path | None, data_dir: Path, device: str, work: Callable[..., dict]) -> dict:
    """Open (or build) the zoo and call work(zoo, progress=..., log=...) under a progress bar; a
    library error ends the command with its message."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(), console=err
    ) as bar:
        task = bar.add_task(label, total=1.0)

        def progress(fraction: float, message: str = "") -> None:
            bar.update(task, completed=fraction, description=message[:60] or label)

        try:
            from zooscope.autoencoder.training import resolve_device
            from zooscope.experiments.ablation import open_or_build_zoo

            zoo_obj = open_or_build_zoo(
                zoo, data_dir, log=bar.console.print, device=str(resolve_device(device))
            )
            return work(zoo_obj, progress=progress, log=bar.console.print)
        except (ZooscopeError, ValueError) as error:
            raise fail(error) from error


def _print_fidelity(results: dict, split: str = "test") -> None:
    from zooscope.experiments.sweeps import measured_on

    for name, result in results["configs"].items():
        agg = measured_on(result, split)["evaluation"]
        err.print(
            f"{name}: {split} agreement {agg['agreement']['mean']:.1%}, recon acc mean "
            f"{agg['reconstructed_accuracy']['mean']:.1%} (orig {agg['original_accuracy']['mean']:.1%}), "
            f"structural L2 {agg['structural_distance_real']['mean']:.2f}",
            highlight=False,
        )


@app.command("ablation")
def ablation(
    zoo: Path | None = ZOO,
    data_dir: Path = DATA_DIR,
    preset: str = PRESET,
    epochs: int | None = EPOCHS,
    out: Path = _out("ablation"),
    device: str = DEVICE,
    configs: str | None = typer.Option(
        None,
        help="Comma-separated subset of structure, behaviour, csb, csb_noise, csb_stats, "
        "structure_stats (default: experiment.DEFAULT_CONFIGS: all but csb_noise and structure_stats).",
    ),
    query_ablation: bool = typer.Option(
        False, "--query-ablation", help="Also run C+S+B with uniform-noise queries."
    ),
    results_path: Path = _results_path("results.md"),
    seed: int = SEED,
    n_generate: int = N_GENERATE,
    resume: bool = RESUME,
    latent_dim: int | None = LATENT_DIM,
    warmup_epochs: int | None = typer.Option(
        None,
        min=0,
        help="Epochs of the structure-first warm-up in the configurations that have one "
        "(default: the preset's).",
    ),
) -> None:
    """Train structure-only, behaviour-only, C+S+B and the cpu recipe on the same budget and compare them."""
    from zooscope.experiments.ablation import DEFAULT_CONFIGS, run_ablation

    names = list(DEFAULT_CONFIGS) if configs is None else [c.strip() for c in configs.split(",") if c.strip()]
    command = _command()
    results = _run(
        "ablation",
        zoo,
        data_dir,
        device,
        partial(
            run_ablation,
            out_dir=out,
            preset=preset,
            epochs=epochs,
            configs=names,
            query_ablation=query_ablation,
            device=device,
            seed=seed,
            n_generate=n_generate,
            results_path=results_path,
            command=command,
            resume=resume,
            latent_dim=latent_dim,
            warmup_epochs=warmup_epochs,
        ),
    )
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


@app.command("queries")
def queries(
    zoo: Path | None = ZOO,
    data_dir: Path = DATA_DIR,
    preset: str = PRESET,
    epochs: int | None = EPOCHS,
    out: Path = _out("queries"),
    device: str = DEVICE,
    ood_dataset: str | None = typer.Option(
        None,
        help="Data set of the out-of-distribution queries (default: sweeps.OOD_QUERY_DATASETS for the "
        "zoo's data set: mnist5k for digits, digits for MNIST).",
    ),
    results_path: Path = _results_path("results-queries.md"),
    seed: int = SEED,
    n_generate: int = N_GENERATE,
    resume: bool = RESUME,
    latent_dim: int | None = LATENT_DIM,
) -> None:
    """C+S+B with the behavioural queries from the training images, another data set's images, uniform
    noise and Gaussian noise: agreement, reconstructed accuracy and structural distance on the test split."""
    from zooscope.experiments.sweeps import run_queries

    command = _command()
    results = _run(
        "queries",
        zoo,
        data_dir,
        device,
        partial(
            run_queries,
            out_dir=out,
            ood_dataset=ood_dataset,
            preset=preset,
            epochs=epochs,
            device=device,
            seed=seed,
            n_generate=n_generate,
            results_path=results_path,
            command=command,
            resume=resume,
            latent_dim=latent_dim,
        ),
    )
    _print_fidelity(results)
    err.print(f"results written to {results_path} and {Path(out) / 'results.json'}")


@app.command("beta")
def beta(
    zoo: Path | None = ZOO,
    data_dir: Path = DATA_DIR,
    preset: str = PRESET,
    epochs: int | None = EPOCHS,
    out: Path = _out("beta"),
    device: str = DEVICE,
    betas: str = typer.Option(
        "0,0.1,0.3,0.5,1", help="Comma-separated betas, the weight of structure (1: structure only)."
    ),
    results_path: Path = _results_path("results-beta.md"),
    seed: int = SEED,
    n_generate: int = N_GENERATE,
    resume: bool = RESUME,
    latent_dim: int | None = LATENT_DIM,
) -> None:
    """C+S+B at each beta: agreement and structural distance on the validation split."""
    from zooscope.experiments.sweeps import run_beta

    values = _numbers(betas, "--betas")
    command = _command()
    results = _run(
        "beta",
        zoo,
        data_dir,
        device,
        partial(
            run_beta,
            out_dir=out,
            betas=values,
            preset=preset,
            epochs=epochs,
            device=device,
            seed=seed,
            n_generate=n_generate,
            results_path=results_path,
            command=command,
            resume=resume,
            latent_dim=latent_dim,
        ),
    )
    _print_fidelity(results, "val")
    err.print(f"results written to {results_path} and {Path(out) / 'results.json'}")


@app.command("views")
def views(
    zoo: Path | None = ZOO,
    data_dir: Path = DATA_DIR,
    preset: str = PRESET,
    epochs: int | None = EPOCHS,
    out: Path = _out("views"),
    device: str = DEVICE,
    results_path: Path = _results_path("results-views.md"),
    seed: int = SEED,
    n_generate: int = N_GENERATE,
    resume: bool = RESUME,
    latent_dim: int | None = LATENT_DIM,
) -> None:
    """C+S+B with function-preserving views, function-breaking views and no contrastive term: agreement,
    R^2 of test accuracy from the embedding and structural distance on the test split."""
    from zooscope.experiments.sweeps import run_views

    command = _command()
    results = _run(
        "views",
        zoo,
        data_dir,
        device,
        partial(
            run_views,
            out_dir=out,
            preset=preset,
            epochs=epochs,
            device=device,
            seed=seed,
            n_generate=n_generate,
            results_path=results_path,
            command=command,
            resume=resume,
            latent_dim=latent_dim,
        ),
    )
    _print_fidelity(results)
    for name, result in results["configs"].items():
        r2 = result["probes"].get("test_acc", {}).get("embedding", {}).get("r2_test")
        err.print(f"{name}: R^2 test accuracy {'-' if r2 is None else format(r2, '.3f')}", highlight=False)
    err.print(f"results written to {results_path} and {Path(out) / 'results.json'}")


@app.command("sensitivity")
def sensitivity(
    zoo: Path | None = ZOO,
    data_dir: Path = DATA_DIR,
    autoencoder: Path | None = typer.Option(
        None,
        exists=True,
        file_okay=False,
        help="A trained autoencoder to analyse (default: train C+S+B on the zoo first).",
    ),
    preset: str = PRESET,
    epochs: int | None = EPOCHS,
    out: Path = _out("sensitivity"),
    device: str = DEVICE,
    norms: str | None = typer.Option(
        None, help="Comma-separated increasing L2 norms (default: analysis.sensitivity.DEFAULT_NORMS)."
    ),
    tolerance: float | None = typer.Option(
        None,
        min=0.0,
        help="Relative error beyond which the first-order prediction no longer holds "
        "(default: analysis.sensitivity.LINEAR_TOLERANCE, 0.1).",
    ),
    inputs: int | None = typer.Option(
        1000, min=1, help="Test images the perturbed models run on (the first N)."
    ),
    checkpoints: int | None = typer.Option(
        None, min=1, help="Test checkpoints perturbed (the first N; default: all)."
    ),
    results_path: Path = _results_path("results-sensitivity.md"),
    seed: int = typer.Option(0, help="Seed of the training and of the random directions."),
    n_generate: int = N_GENERATE,
    resume: bool = RESUME,
    latent_dim: int | None = LATENT_DIM,
) -> None:
    """Perturb the test originals along random and reconstruction-error directions by growing norms:
    accuracy, agreement and the measured change of the logits beside the first-order (Jacobian) prediction."""
    from zooscope.analysis.sensitivity import DEFAULT_NORMS, LINEAR_TOLERANCE
    from zooscope.experiments.sensitivity import run_sensitivity

    grid = DEFAULT_NORMS if norms is None else _numbers(norms, "--norms")
    command = _command()
    results = _run(
        "sensitivity",
        zoo,
        data_dir,
        device,
        partial(
            run_sensitivity,
            out_dir=out,
            autoencoder=autoencoder,
            preset=preset,
            epochs=epochs,
            device=device,
            seed=seed,
            n_generate=n_generate,
            latent_dim=latent_dim,
            norms=grid,
            tolerance=LINEAR_TOLERANCE if tolerance is None else tolerance,
            n_inputs=inputs,
            max_checkpoints=checkpoints,
            results_path=results_path,
            command=command,
            resume=resume,
        ),
    )
    for direction, norm in results["sensitivity"]["breakdown"].items():
        where = "beyond the grid" if norm is None else f"at norm {norm:g}"
        err.print(
            f"{direction} directions: the first-order prediction stops holding {where}", highlight=False
        )
    err.print(f"results written to {results_path} and {Path(out) / 'results.json'}")
