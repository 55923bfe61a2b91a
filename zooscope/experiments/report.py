"""The ablation's results page: docs/results.md, rendered from the results dict that
`run_ablation` returns and writes to results.json.

One table, a row per measurement (ROW_LABELS) and a column per configuration, beside the paper's
numbers; then the cost of a behavioural step, where the best zoo model sits, the targets table
(targets.py) and the accuracy-vs-diversity curves. The page is a pure function of the dict:
`results_markdown(json.loads(Path("docs/results.json").read_text()))` renders docs/results.md
again, byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from zooscope.experiments.targets import best_test_gap, targets_markdown

# docs/method.md §9: SVHN / CIFAR-10 / EuroSAT, structure-only (C+S) and C+S+B.
PAPER_NUMBERS: dict[str, tuple[str, str]] = {
    "agreement_mean": ("50.0 / 31.9 / 35.9", "87.0 / 59.6 / 65.8"),
    "structural_l2_mean": ("30.7 / 31.3 / 41.4", "27.1 / 30.0 / 43.6"),
    "best_reconstruction_gap": ("-16.5 / -18.9 / -19.9", "-0.6 / -0.6 / -0.8"),
    "best_generated_gap": ("-29.7 / -24.1 / -32.0", "-0.6 / -0.6 / -1.0"),
    "r2_test_acc": ("0.742 / 0.890 / 0.957", "0.886 / 0.947 / 0.969"),
    "generated_weight_l2": (
        "13.4 / 14.9 / 16.8 (zoo 23.3 / 22.9 / 23.0)",
        "1.5 / 1.3 / 2.1 (zoo 23.3 / 22.9 / 23.0)",
    ),
}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def metric_cells(r: dict[str, Any]) -> dict[str, str | None]:
    """One configuration's column: a cell per ROW_LABELS key, from run_config's result; None where
    the result predates the measurement (table_rows leaves out a row that is None everywhere)."""
    ev, gen, probes, t = r["evaluation"], r["generation"], r["probes"], r["timings"]
    high = ev["agreement_high_accuracy"]
    div = gen["diversity"]

    def probe(prop: str) -> str:
        p = probes.get(prop, {})
        embedding = p.get("embedding", {}).get("r2_test")
        baseline = p.get("weight_statistics", {}).get("r2_test")
        return f"{_num(embedding, '.3f')} ({_num(baseline, '.3f')})"

    def mean_max(summary: dict[str, Any]) -> str:
        return f"{_pct(summary['mean'])} / {_pct(summary['max'])}"

    def other_originals() -> str | None:  # None: a result from before specificity was measured
        measured = ev.get("specificity")
        if measured is None:
            return None
        return f"{_pct(measured['other_originals'])} ({_pct(measured['originals_with_each_other'])})"

    return {
        "agreement_mean": f"{_pct(ev['agreement']['mean'])} ± {_pct(ev['agreement']['std'])}",
        "agreement_high": f"{_pct(high['mean'])} (n={high['count']})",
        "agreement_other_originals": other_originals(),
        "structural_l2_mean": _num(ev["structural_distance"]["mean"]),
        "structural_l2_real": _num(ev["structural_distance_real"]["mean"]),
        "behavioural_distance": _num(ev["behavioural_distance"]["mean"], ".3f"),
        "original_accuracy": mean_max(ev["original_accuracy"]),
        "reconstructed_accuracy": mean_max(ev["reconstructed_accuracy"]),
        "best_reconstruction_gap": _num(r["best_reconstruction_gap"], "+.1f"),
        "best_reconstruction_gap_test": _num(best_test_gap(r), "+.1f"),
        "best_generated_gap": _num(gen["best_generated_gap"], "+.1f"),
        "generated_accuracy": mean_max(gen["accuracy"]),
        "r2_test_acc": probe("test_acc"),
        "r2_gen_gap": probe("gen_gap"),
        "r2_epoch": probe("epoch"),
        "generated_weight_l2": (
            f"{_num(div['generated']['weight_l2'])} (anchors {_num(div['anchors']['weight_l2'])})"
        ),
        "generated_disagreement": (
            f"{_pct(div['generated']['disagreement'])} (anchors {_pct(div['anchors']['disagreement'])})"
        ),
        "seconds_per_epoch": _num(t["seconds_per_epoch"], ".1f"),
        "seconds_per_step": _num(t["seconds_per_step"], ".3f"),
        "collapsed": "yes" if r["collapsed"] else "no",
    }


ROW_LABELS = {
    "agreement_mean": "mean agreement with original (%)",
    "agreement_high": "mean agreement, originals >= 80 % accuracy (%)",
    "agreement_other_originals": "agreement with other models' originals (%): reconstruction "
    "(originals with each other)",
    "structural_l2_mean": "mean structural L2 (tokens, padding included)",
    "structural_l2_real": "mean structural L2 (real parameters only)",
    "behavioural_distance": "mean behavioural distance (softmax L2)",
    "original_accuracy": "original accuracy, mean / max (%)",
    "reconstructed_accuracy": "reconstructed accuracy, mean / max (%)",
    "best_reconstruction_gap": "best reconstruction vs best zoo model (points)",
    "best_reconstruction_gap_test": "best reconstruction vs best test original (points)",
    "best_generated_gap": "best generated vs best zoo model (points)",
    "generated_accuracy": "generated accuracy, mean / max (%)",
    "r2_test_acc": "R^2 test accuracy: embedding (weight statistics)",
    "r2_gen_gap": "R^2 generalisation gap: embedding (weight statistics)",
    "r2_epoch": "R^2 epoch: embedding (weight statistics)",
    "generated_weight_l2": "generated diversity, mean pairwise weight L2",
    "generated_disagreement": "generated diversity, mean pairwise disagreement (%)",
    "seconds_per_epoch": "seconds per training epoch",
    "seconds_per_step": "seconds per training step (median)",
    "collapsed": "collapse flagged at the last validation",
}


def table_rows(keys: Iterable[str], columns: list[dict[str, str | None]]) -> list[tuple[str, list[str]]]:
    """(key, one cell per column) for each key measured in at least one column ("-" where a
    column lacks it): pages written before a row existed render as they were."""
    rows = []
    for key in keys:
        cells = [column[key] for column in columns]
        if any(cell is not None for cell in cells):
            rows.append((key, ["-" if cell is None else cell for cell in cells]))
    return rows


def _latent_lines(results: dict[str, Any]) -> list[str]:
    """The latent's size beside the checkpoint's: below 1 the autoencoder must compress."""
    first = next(iter(results["configs"].values()), None)
    if first is None or "latent_numbers" not in first:  # results that do not record the latent's size
        return []
    latent, parameters = first["latent_numbers"], first["checkpoint_parameters"]
    config = first["autoencoder_config"]
    width, per_model = config["latent_dim"], config.get("latent_tokens", 0)
    if results.get("autoencoder"):  # an artefact given to the experiment, not trained by it
        source = "the artefact's"
    else:
        source = "overrides the preset's" if results.get("latent_dim") is not None else "the preset's"
    shape = f"{per_model} latent tokens of {width}" if per_model else f"{width} per token"
    return [
        f"- latent: {shape} ({source}), {latent:,} numbers per checkpoint for its "
        f"{parameters:,} parameters ({latent / parameters:.2f}x)"
    ]


def run_lines(results: dict[str, Any], caller: str) -> list[str]:
    """What every results page opens with: the command (`caller` where the results were made by a
    function call), the zoo, preset, epochs and seed, the latent's size against the checkpoint's,
    the machine and the code version."""
    machine = results["machine"]
    if results.get("autoencoder"):
        given = results["autoencoder"]
        trained = f"- autoencoder: {given} (given, not trained here), seed: {results['seed']}"
    else:
        warmup = results.get("warmup_epochs")  # pages written before the key lack it: the preset's
        trained = (
            f"- preset: {results['preset']}, epochs: {results['epochs'] or 'preset default'}, "
            + (f"structure-first warm-up: {warmup} epochs, " if warmup is not None else "")
            + f"seed: {results['seed']}"
        )
    return [
        f"- command: `{results.get('command') or caller}`",
        f"- zoo: {results['zoo'].get('path', '?')} ({results['zoo']['architecture']}, "
        f"checkpoints train/val/test {results['zoo']['checkpoints']})",
        trained,
        *_latent_lines(results),
        f"- machine: {machine['platform']}; CPU {machine['cpu']} ({machine['cpu_threads']} threads); "
        f"GPU {machine['gpu'] or 'none'}; device {machine['device']}; torch {machine['torch']}; "
        f"python {machine['python']}",
        f"- zooscope {results['code_version']}",
    ]


def results_markdown(results: dict[str, Any]) -> str:
    configs = results["configs"]
    names = list(configs)
    rows = {name: metric_cells(configs[name]) for name in names}
    header = ["metric", *(configs[n]["config"]["label"] for n in names), "paper C+S", "paper C+S+B"]
    lines = [
        "# Results: the structure / behaviour ablation",
        "",
        "Written by `zooscope experiment ablation` (zooscope/experiments/ablation.py); do not edit by hand.",
        "",
        *run_lines(results, "run_ablation(...)"),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for key, cells in table_rows(ROW_LABELS, [rows[n] for n in names]):
        lines.append("| " + " | ".join([ROW_LABELS[key], *cells, *PAPER_NUMBERS.get(key, ("", ""))]) + " |")
    ratio = results.get("behavioural_step_cost_ratio")
    # The page lives in docs/, so it names docs/method.md by its relative path, method.md.
    lines += [
        "",
        "Cost of a C+S+B step over a structure-only step, measured in this run: "
        f"{'not measured (needs structure and csb)' if ratio is None else format(ratio, '.2f') + 'x'} "
        "(the paper implies about 2x; method.md §11 measured 1.23x on an H200 and 1.9x on a 2-core CPU).",
        *_best_model_note(configs[names[0]]),
        "",
        "Paper columns: SVHN / CIFAR-10 / EuroSAT zoos of CNN3, 720 test checkpoints each, best zoo models "
        "91.0 / 70.1 / 88.5 % (method.md §9). Agreement, not accuracy, is the fidelity measure: a weak "
        "original can come back as a better model.",
        *targets_markdown(results),
    ]
    for name in names:
        for curve in configs[name].get("diversity_curves") or []:
            lines += _curve_lines(configs[name]["config"]["label"], curve)
    return "\n".join(lines) + "\n"


def _best_model_note(result: dict[str, Any]) -> list[str]:
    """Where the best zoo model sits: when it is not in the test split, a perfect copy of every test
    checkpoint still scores below 0 on 'best reconstruction vs best zoo model'."""
    best_zoo = result["best_zoo_accuracy"]
    best_test = result["evaluation"]["original_accuracy"]["max"]
    if best_test is None or best_test >= best_zoo:
        return []
    return [
        "",
        f"The best zoo model ({_pct(best_zoo)} %) is a training-split checkpoint; the best test original "
        f"reaches {_pct(best_test)} %, so an exact copy of the test split scores "
        f"{100 * (best_test - best_zoo):+.1f} points on 'best reconstruction vs best zoo model' and 0 on "
        "'best reconstruction vs best test original'.",
    ]


CURVE_NOTES = {
    "bandwidth": "bandwidth multiplier of the latent KDE (Scott's rule per dimension x multiplier; 0 decodes "
    "the anchors themselves)",
    "spread": "spread of the kernel centres away from the anchors' mean (1: the anchors; above 1: "
    "extrapolation), bandwidth multiplier 1",
}


def _curve_lines(label: str, curve: list[dict[str, Any]]) -> list[str]:
    knob = curve[0]["knob"]
    lines = [
        "",
        f"## Accuracy vs diversity, {knob} ({label})",
        "",
        f"Setting: the {CURVE_NOTES[knob]}. Beyond the paper, whose generated models collapsed to about "
        "1/15 of the zoo's diversity.",
        "",
        f"| {knob} | accuracy mean / max (%) | weight L2 (anchors) | disagreement (anchors) (%) |",
        "|---|---|---|---|",
    ]
    for row in curve:
        lines.append(
            f"| {row['setting']:g} | {_pct(row['accuracy_mean'])} / {_pct(row['accuracy_max'])} | "
            f"{_num(row['weight_l2'])} ({_num(row['anchor_weight_l2'])}) | "
            f"{_pct(row['disagreement'])} ({_pct(row['anchor_disagreement'])}) |"
        )
    return lines
