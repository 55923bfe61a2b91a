"""The sensitivity experiment (docs/method.md §9.4): where the first-order account of §4 stops
holding, measured around the test originals (zooscope/analysis/sensitivity.py) and written up as a
results page.

It trains one C+S+B autoencoder (the ablation's csb, by ablation.run_config) or takes a trained
one, whose reconstruction errors give one of the two directions of perturbation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zooscope.analysis.sensitivity import DEFAULT_NORMS, DIRECTIONS, LINEAR_TOLERANCE, check_norms
from zooscope.errors import ZooscopeError
from zooscope.experiments.ablation import (
    ABLATIONS,
    LogFn,
    describe_autoencoder,
    results_header,
    run_configs,
    write_results,
)
from zooscope.experiments.report import _num, _pct, run_lines
from zooscope.networks.architectures import same_function_family
from zooscope.progress import ProgressFn, report, scaled

# The autoencoder the experiment trains when it is not given one.
TRAINED_CONFIG = ABLATIONS["csb"]
DIRECTION_TITLES = {
    "random": "Random directions",
    "error": "Along each reconstruction's error direction",
}


def run_sensitivity(
    zoo: Any,
    out_dir: str | Path,
    *,
    autoencoder: str | Path | None = None,
    preset: str,
    epochs: int | None = None,
    device: str = "auto",
    seed: int = 0,
    n_generate: int = 100,
    latent_dim: int | None = None,
    norms: Sequence[float] = DEFAULT_NORMS,
    tolerance: float = LINEAR_TOLERANCE,
    n_inputs: int | None = None,
    max_checkpoints: int | None = None,
    results_path: str | Path | None = None,
    command: str | None = None,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train C+S+B on `zoo` (or load `autoencoder`), perturb the test originals, write the page.

    `seed` seeds the training and the random directions; `n_inputs` and `max_checkpoints` bound
    the analysis to the first test images and test checkpoints (None: all of them)."""
    from zooscope.analysis.sensitivity import analyse_sensitivity
    from zooscope.autoencoder.artefact import TrainedAutoencoder

    say = log or (lambda message: None)
    norms = check_norms(norms)  # a bad grid fails now, not after the training
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if autoencoder is None:
        results = run_configs(
            zoo, [TRAINED_CONFIG], out, preset=preset, epochs=epochs, device=device, seed=seed,
            n_generate=n_generate, command=command, progress=scaled(progress, 0.0, 0.6), log=log,
            resume=resume, latent_dim=latent_dim,
        )  # fmt: skip
        artefact = Path(results["configs"][TRAINED_CONFIG.name]["artefact"])
        ae = TrainedAutoencoder.load(artefact, results["machine"]["device"])
    else:
        artefact = Path(autoencoder)
        results = results_header(
            zoo, command=command, device=device, seed=seed, preset=None, epochs=None, latent_dim=None
        )
        results["autoencoder"] = str(artefact)
        ae = TrainedAutoencoder.load(artefact, results["machine"]["device"])
        if not same_function_family(ae.architecture, zoo.architecture):
            raise ZooscopeError(
                f"the autoencoder {artefact} was trained on {ae.architecture.name} checkpoints, "
                f"the zoo holds {zoo.architecture.name}"
            )
        tc = ae.training_config
        results["configs"]["given"] = {
            "config": {"name": "given", "label": f"given autoencoder {artefact.name}"},
            "training_config": None if tc is None else tc.to_dict(),
            **describe_autoencoder(ae),
            "artefact": str(artefact),
        }
    say(f"perturbing the test originals along {' and '.join(DIRECTIONS)} directions, norms {list(norms)}")
    analysis = analyse_sensitivity(
        ae, zoo, n_inputs=n_inputs, max_checkpoints=max_checkpoints, norms=norms, tolerance=tolerance,
        seed=seed, device=results["machine"]["device"], progress=scaled(progress, 0.6, 1.0),
    )  # fmt: skip
    results["experiment"] = "sensitivity"
    results["sensitivity"] = analysis.to_dict()
    write_results(results, out, results_path, sensitivity_markdown)
    report(progress, 1.0, "sensitivity done")
    return results


def sensitivity_markdown(results: dict[str, Any]) -> str:
    """The sensitivity page: a pure function of its results.json."""
    s = results["sensitivity"]
    first = next(iter(results["configs"].values()))
    lines = [
        "# Results: sensitivity of the function to weight perturbations",
        "",
        "Written by `zooscope experiment sensitivity` (zooscope/experiments/sensitivity.py); "
        "do not edit by hand.",
        "",
        *run_lines(results, "run_sensitivity(...)"),
        "",
        "The behavioural loss rests on a first-order account (docs/method.md §4, §9.4): near a "
        "network's weights, the change of its outputs is the Jacobian of its logits with respect to the "
        "weights times the weight change. Each test original's weights and biases are moved by a grid of "
        "L2 norms along a random direction and along its reconstruction's error direction "
        "(reconstruction minus original), each of unit length; the measured change of the logits stands "
        "beside the first-order prediction (a Jacobian-vector product times the norm, float64).",
        "",
        f"- perturbed: {s['n_checkpoints']} test checkpoints on {s['n_inputs']} test images, "
        f"{s['n_perturbed']:,} weights and biases each (BatchNorm statistics left as they are); random "
        f"directions seeded with {s['seed']}",
        f"- the originals' weight norm: mean {_num(s['weight_norm']['mean'])} "
        f"(min {_num(s['weight_norm']['min'])}, max {_num(s['weight_norm']['max'])}); their accuracy "
        f"on these images: mean {_pct(s['original_accuracy']['mean'])} %",
        f"- the reconstruction errors' norm ({first['config']['label']}): mean "
        f"{_num(s['error_norm']['mean'])} (min {_num(s['error_norm']['min'])}, "
        f"max {_num(s['error_norm']['max'])})",
        "- change: the L2 norm of the change of the logits, root mean square over checkpoints and "
        "images; relative error: ||measured - predicted|| / ||measured||, pooled over every checkpoint "
        "and image (the per-checkpoint median beside it)",
        f"- the first-order prediction stops holding at the smallest norm of the grid from which the "
        f"relative error exceeds {100 * s['tolerance']:g} % at that norm and every larger one",
    ]
    for direction in DIRECTIONS:
        lines += [
            "",
            f"## {DIRECTION_TITLES[direction]}",
            "",
            *_table(s["directions"][direction], direction, s),
        ]
        lines += ["", _breakdown_line(s["breakdown"][direction], s)]
    return "\n".join(lines) + "\n"


def _table(rows: list[dict[str, Any]], direction: str, s: dict[str, Any]) -> list[str]:
    lines = [
        "| L2 norm | accuracy (%) | agreement with the original (%) | measured change | first-order "
        "prediction | relative error (%) | median over checkpoints (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    cells = [(f"{row['norm']:g}", row) for row in rows]
    if direction == "error":
        cells.append(("each one's own error norm (the reconstruction)", s["own_error"]))
    for norm, row in cells:
        lines.append(
            f"| {norm} | {_pct(row['accuracy'])} | {_pct(row['agreement'])} | "
            f"{_num(row['measured_change'], '.4g')} | {_num(row['predicted_change'], '.4g')} | "
            f"{_pct(row['relative_error'])} | {_pct(row['relative_error_median'])} |"
        )
    return lines


def _breakdown_line(norm: float | None, s: dict[str, Any]) -> str:
    tolerance = f"{100 * s['tolerance']:g} %"
    prediction = "The first-order prediction"
    if norm is None:
        return f"{prediction} holds to within {tolerance} up to the largest norm, {s['norms'][-1]:g}."
    if norm == s["norms"][0]:
        return f"{prediction} misses by more than {tolerance} at every norm of the grid, {norm:g} on."
    return (
        f"{prediction} stops holding at norm {norm:g}: its relative error is above {tolerance} there "
        "and at every larger norm."
    )
