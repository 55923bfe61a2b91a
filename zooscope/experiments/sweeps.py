"""Three of the paper's experiments as sweeps of one knob of C+S+B (docs/method.md §9.1 to §9.3),
each trained on one zoo on one budget and written up as a results page of its own:

  queries  where the behavioural loss's queries come from: the zoo's training images, natural
           images of another data set, uniform noise or Gaussian noise (§9.1)
  beta     the weight of structure in the reconstruction loss, read on the validation split (§9.2)
  views    the contrastive views: function-preserving permutations, permutations that break the
           function, or no contrastive term (§9.3)

Every configuration is the ablation's C+S+B (ablation.ABLATIONS["csb"]: the paper's three terms
after the preset's structure-first warm-up) with the one knob changed, trained and measured by
ablation.run_config. The page shows the rows that answer the sweep's question; the JSON beside it
holds everything run_config measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from zooscope.experiments.ablation import (
    ABLATIONS,
    AblationConfig,
    LogFn,
    run_configs,
    write_results,
)
from zooscope.experiments.report import ROW_LABELS, metric_cells, run_lines, table_rows
from zooscope.progress import ProgressFn

# The method every sweep varies one knob of.
METHOD = ABLATIONS["csb"]
# docs/method.md §12; 1 is the structure-only end, 0 behaviour only.
BETAS = (0.0, 0.1, 0.3, 0.5, 1.0)
# The out-of-distribution natural images of the queries sweep, by the zoo's data set: other images
# of the same kind of object at another source (the two offline digit sets for each other), else
# the nearest other data set (read from local files, docs/datasets.md).
OOD_QUERY_DATASETS = {
    "digits": "mnist5k",
    "mnist5k": "digits",
    "mnist": "digits",
    "fashion_mnist": "mnist5k",
    "svhn": "cifar10",
    "cifar10": "svhn",
    "eurosat": "cifar10",
}


@dataclass(frozen=True)
class Sweep:
    name: str  # the command: `zooscope experiment <name>`
    title: str
    question: str  # what the page measures and what the paper found
    split: str  # where the table's fidelity numbers come from: "test", or "val" where a value is chosen
    rows: tuple[str, ...]  # report.ROW_LABELS keys, in the page's order


_CONTEXT_ROWS = ("original_accuracy", "collapsed", "seconds_per_epoch")
SWEEPS: dict[str, Sweep] = {
    "queries": Sweep(
        "queries",
        "the query source of the behavioural loss",
        "Where the queries on which original and reconstruction are compared come from (docs/method.md "
        "§9.1). The paper: queries must come from the zoo's own data; with noise or another data set's "
        "images the reconstructions are left at chance.",
        "test",
        (
            "agreement_mean",
            "agreement_high",
            "agreement_other_originals",
            "reconstructed_accuracy",
            "structural_l2_mean",
            "structural_l2_real",
            "behavioural_distance",
            *_CONTEXT_ROWS,
        ),
    ),
    "beta": Sweep(
        "beta",
        "beta, the weight of structure",
        "beta weighs the structural term against the behavioural one (docs/method.md §4, §9.2): 1 is "
        "structure only, 0 behaviour only. Read on the validation split, where a value is chosen. The "
        "paper: beta 0.1 balances structural distance and agreement; beta 0 collapses to one class.",
        "val",
        (
            "agreement_mean",
            "agreement_high",
            "agreement_other_originals",
            "structural_l2_mean",
            "structural_l2_real",
            "reconstructed_accuracy",
            *_CONTEXT_ROWS,
        ),
    ),
    "views": Sweep(
        "views",
        "the contrastive views",
        "What the contrastive term pulls together (docs/method.md §5, §9.3): two function-preserving "
        "permutations of a checkpoint (the paper's views), a checkpoint and a permutation of it that "
        "computes something else, or nothing (no contrastive term).",
        "test",
        (
            "agreement_mean",
            "agreement_high",
            "agreement_other_originals",
            "r2_test_acc",
            "structural_l2_mean",
            "structural_l2_real",
            "reconstructed_accuracy",
            *_CONTEXT_ROWS,
        ),
    ),
}
SPLIT_NOTES = {
    "test": "Fidelity rows: the test checkpoints, on the zoo's test images.",
    "val": "Fidelity rows: the validation checkpoints, on the zoo's validation images (the test "
    "split's numbers are in the JSON beside this page).",
}


def query_configs(ood_dataset: str) -> list[AblationConfig]:
    return [
        replace(METHOD, name="train", label="training-split images"),
        replace(
            METHOD, name="ood", label=f"{ood_dataset} images (OOD)", query_source=f"dataset:{ood_dataset}"
        ),
        replace(METHOD, name="uniform", label="uniform noise", query_source="uniform"),
        replace(METHOD, name="gaussian", label="Gaussian noise", query_source="gaussian"),
    ]


def beta_configs(betas: Sequence[float] = BETAS) -> list[AblationConfig]:
    if not betas or any(not 0.0 <= beta <= 1.0 for beta in betas):
        raise ValueError(f"betas must lie in [0, 1], got {list(betas)}")
    return [replace(METHOD, name=f"beta_{beta:g}", label=f"beta {beta:g}", beta=beta) for beta in betas]


def view_configs() -> list[AblationConfig]:
    return [
        replace(METHOD, name="function_preserving", label="function-preserving views"),
        replace(METHOD, name="random", label="function-breaking views", contrastive_views="random"),
        replace(METHOD, name="none", label="no contrastive term", gamma=0.0, contrastive_views="none"),
    ]


def ood_dataset_for(dataset: str) -> str:
    if dataset not in OOD_QUERY_DATASETS:
        raise ValueError(f"no out-of-distribution data set is set for {dataset!r}: pass one (--ood-dataset)")
    return OOD_QUERY_DATASETS[dataset]


def run_queries(
    zoo: Any, out_dir: str | Path, *, ood_dataset: str | None = None, **options: Any
) -> dict[str, Any]:
    """The queries sweep; `ood_dataset` defaults to OOD_QUERY_DATASETS[the zoo's data set]."""
    from zooscope.networks.datasets import load_dataset

    data = zoo.dataset()
    ood = ood_dataset or ood_dataset_for(data.name)
    load_dataset(ood)  # a missing data set fails now, not after the first configurations trained
    details = {"ood_dataset": ood, "input_shape": list(data.input_shape), "n_classes": data.n_classes}
    return _run_sweep(SWEEPS["queries"], query_configs(ood), zoo, out_dir, details, **options)


def run_beta(
    zoo: Any, out_dir: str | Path, *, betas: Sequence[float] = BETAS, **options: Any
) -> dict[str, Any]:
    return _run_sweep(SWEEPS["beta"], beta_configs(betas), zoo, out_dir, {"betas": list(betas)}, **options)


def run_views(zoo: Any, out_dir: str | Path, **options: Any) -> dict[str, Any]:
    return _run_sweep(SWEEPS["views"], view_configs(), zoo, out_dir, {}, **options)


def _run_sweep(
    sweep: Sweep,
    configs: Sequence[AblationConfig],
    zoo: Any,
    out_dir: str | Path,
    details: dict[str, Any],
    *,
    preset: str,
    epochs: int | None = None,
    device: str = "auto",
    seed: int = 0,
    n_generate: int = 100,
    results_path: str | Path | None = None,
    command: str | None = None,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
    resume: bool = False,
    latent_dim: int | None = None,
) -> dict[str, Any]:
    results = run_configs(
        zoo, configs, out_dir, preset=preset, epochs=epochs, device=device, seed=seed,
        n_generate=n_generate, command=command, progress=progress, log=log, resume=resume,
        latent_dim=latent_dim, validation=sweep.split == "val",
    )  # fmt: skip
    results["experiment"] = sweep.name
    results.update(details)
    write_results(results, out_dir, results_path, sweep_markdown)
    return results


def measured_on(result: dict[str, Any], split: str) -> dict[str, Any]:
    """run_config's result with its fidelity numbers taken from `split` ("test" or "val")."""
    return result if split == "test" else {**result, "evaluation": result["validation"]}


def sweep_markdown(results: dict[str, Any]) -> str:
    """The sweep's page: a pure function of its results.json."""
    sweep = SWEEPS[results["experiment"]]
    configs = results["configs"]
    names = list(configs)
    cells = {name: metric_cells(measured_on(configs[name], sweep.split)) for name in names}
    header = ["metric", *(configs[name]["config"]["label"] for name in names)]
    lines = [
        f"# Results: {sweep.title}",
        "",
        f"Written by `zooscope experiment {sweep.name}` (zooscope/experiments/sweeps.py); "
        "do not edit by hand.",
        "",
        *run_lines(results, f"run_{sweep.name}(...)"),
        "",
        sweep.question,
        "",
        f"{SPLIT_NOTES[sweep.split]} Every column is C+S+B (gamma {METHOD.gamma:g}, beta {METHOD.beta:g}, "
        "the paper's three terms) with one thing changed, on the same budget and seed.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for key, row in table_rows(sweep.rows, [cells[name] for name in names]):
        lines.append("| " + " | ".join([ROW_LABELS[key], *row]) + " |")
    lines += NOTES[sweep.name](results)
    return "\n".join(lines) + "\n"


def _query_notes(results: dict[str, Any]) -> list[str]:
    channels, height, width = results["input_shape"]
    return [
        "",
        f"The out-of-distribution queries are the train split of {results['ood_dataset']}, brought to "
        f"[0, 1], converted to {channels} channel{'s' if channels > 1 else ''}, resized to "
        f"{height}x{width} and normalised with the zoo's statistics. Uniform noise spans each "
        "channel's range on the zoo's train split; Gaussian noise has each channel's mean and "
        "standard deviation there "
        f"(zooscope/networks/datasets.py, QuerySampler). Chance: {100 / results['n_classes']:.1f} %.",
    ]


def _beta_notes(results: dict[str, Any]) -> list[str]:
    configs = results["configs"]

    def best(metric: str, highest: bool) -> str:
        values = {
            name: r["validation"][metric]["mean"]
            for name, r in configs.items()
            if r["validation"][metric]["mean"] is not None
        }
        if not values:
            return "-"
        name = (max if highest else min)(values, key=values.__getitem__)
        return f"{configs[name]['training_config']['beta']:g}"

    warmup = next(iter(configs.values()))["training_config"]["beta_warmup_epochs"]
    schedule = (
        f"Each beta is where the preset's structure-first warm-up ends (beta moves from 1 to it over the "
        f"first {warmup} epochs, docs/method.md §11); the paper trains at its beta from the first step."
        if warmup
        else "Each beta holds from the first step (this preset has no warm-up), as in the paper."
    )
    return [
        "",
        f"On validation: the highest mean agreement at beta {best('agreement', True)}, the smallest "
        f"structural L2 (real parameters) at beta {best('structural_distance_real', False)}.",
        "",
        schedule,
    ]


def _view_notes(results: dict[str, Any]) -> list[str]:
    return [
        "",
        "Function-breaking views: the second view permutes each hidden layer's units without the next "
        "layer's inputs (TrainingConfig.contrastive_views 'random'); the first, the one decoded, keeps "
        "the function, so the structural and behavioural terms see the same inputs in every column. "
        "No contrastive term: gamma 0. R^2: ridge regression of test accuracy on the mean-pooled "
        "embedding, with the weight statistics' R^2 in brackets (docs/method.md §8).",
    ]


NOTES = {"queries": _query_notes, "beta": _beta_notes, "views": _view_notes}
