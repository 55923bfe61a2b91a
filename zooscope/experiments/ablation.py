"""The ablation of the paper (method.md §9) on one zoo, written up as docs/results.md.

Configurations, all on the same budget (same preset, same epochs, same seed):
  structure   structure-only baseline C+S (gamma 0.05, beta 1)
  behaviour   behaviour-only (beta 0): the paper reports a collapse to one constant class
  csb         C+S+B (gamma 0.05, beta 0.1), the method
  csb_noise   C+S+B with uniform-noise queries (the query ablation)
  csb_stats   C+S+B plus the layer-statistics term (beyond method.md: the embedding must carry each
              layer's weight statistics; zooscope/autoencoder/layer_statistics.py); the cpu preset's
              own recipe since session 7
  structure_stats  structure-only plus the layer-statistics term: the baseline of the cpu preset's
              recipe, so the behavioural term is ablated inside it too
For each: reconstruction fidelity on the test split, generation, property prediction against the
weight-statistics baseline, and timings. Only torch/numpy/sklearn are needed: the lead runs this
on a GPU machine without the web stack.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

import zooscope
from zooscope.experiments.targets import best_test_gap, step_cost_ratio, targets_markdown
from zooscope.progress import ProgressFn, report, scaled

LogFn = Callable[[str], None]


# delta of the csb_stats configuration (docs/tuning.md, "What bounds R^2 on this zoo").
STATISTICS_WEIGHT = 1.0


@dataclass(frozen=True)
class AblationConfig:
    name: str
    label: str
    gamma: float
    beta: float
    query_source: str = "train"
    # The structure-first warm-up belongs to the method's CPU recipe (method.md §11); the baselines
    # run without it, as in the paper (for structure-only it changes nothing).
    warmup: bool = True
    statistics_weight: float = 0.0  # the fourth term beyond method.md (TrainingConfig.statistics_weight)


ABLATIONS: dict[str, AblationConfig] = {
    "structure": AblationConfig("structure", "structure-only (C+S)", 0.05, 1.0, warmup=False),
    "behaviour": AblationConfig("behaviour", "behaviour-only (beta 0)", 0.05, 0.0, warmup=False),
    "csb": AblationConfig("csb", "C+S+B", 0.05, 0.1),
    "csb_noise": AblationConfig("csb_noise", "C+S+B, noise queries", 0.05, 0.1, query_source="noise"),
    "csb_stats": AblationConfig(
        "csb_stats", "C+S+B + layer statistics", 0.05, 0.1, statistics_weight=STATISTICS_WEIGHT
    ),
    "structure_stats": AblationConfig(
        "structure_stats",
        "structure-only + layer statistics",
        0.05,
        1.0,
        warmup=False,
        statistics_weight=STATISTICS_WEIGHT,
    ),
}
# The paper's three, and the cpu preset's own recipe (C+S+B with the layer-statistics term).
DEFAULT_CONFIGS = ("structure", "behaviour", "csb", "csb_stats")
# The configurations whose generation is also measured as accuracy-vs-diversity curves.
CURVE_CONFIGS = ("csb", "csb_stats")
# Bandwidth multipliers of the accuracy-vs-diversity curve run for the C+S+B configurations.
CURVE_SETTINGS = (0.0, 1.0, 2.0, 4.0, 8.0)
# Spreads of the kernel centres away from the anchors' mean (extrapolation), the second knob.
SPREAD_SETTINGS = (1.0, 1.5, 2.0, 3.0)
# The structure-only baseline's learning rate in the paper (method.md §6); only used with preset "paper".
PAPER_STRUCTURE_LR = 1e-4

# method.md §9: SVHN / CIFAR-10 / EuroSAT, structure-only (C+S) and C+S+B.
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


def machine_info(device: str) -> dict[str, Any]:
    """What ran the experiment: reported beside every timing."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpu": cpu,
        "cpu_threads": torch.get_num_threads(),
        "device": device,
        "gpu": None,
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _training_config(base: Any, config: AblationConfig, *, epochs: int | None, seed: int, device: str) -> Any:
    changes: dict[str, Any] = {
        "gamma": config.gamma,
        "beta": config.beta,
        "query_source": config.query_source,
        "statistics_weight": config.statistics_weight,
        "seed": seed,
        "device": device,
    }
    if config.statistics_weight == 0.0:
        changes["statistics_weight_final"] = None  # the paper's three terms: no fourth term to schedule
    if epochs is not None:
        changes["epochs"] = epochs
    if not config.warmup:
        changes["beta_warmup_epochs"] = 0
    return replace(base, **changes)


def _timings(log: Sequence[dict[str, Any]], behavioural: bool) -> dict[str, float | None]:
    """Seconds per epoch and per step; for a behavioural run only the epochs where beta < 1 count."""
    epochs = [e for e in log if e.get("seconds") is not None]
    seconds = [e["seconds"] for e in epochs]
    steps = [
        e["seconds_per_step"]
        for e in epochs
        if e.get("seconds_per_step") is not None and (not behavioural or _beta(e) < 1.0)
    ]
    return {
        "seconds_per_epoch": statistics.fmean(seconds) if seconds else None,
        # The median shrugs off the first epoch's one-off costs (allocations, kernel selection).
        "seconds_per_step": statistics.median(steps) if steps else None,
        "epochs": len(epochs),
    }


def _beta(entry: dict[str, Any]) -> float:
    beta = entry.get("beta")
    return 1.0 if beta is None else float(beta)  # beta 0 (behaviour-only) is a value, not a missing one


def _collapsed(log: Sequence[dict[str, Any]]) -> bool:
    last = [e for e in log if "collapse" in e]
    return bool(last and last[-1]["collapse"])


def run_config(
    zoo: Any,
    config: AblationConfig,
    out_dir: Path,
    *,
    preset: str,
    epochs: int | None,
    seed: int,
    device: str,
    n_generate: int,
    curve: bool,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
    resume: bool = False,
    latent_dim: int | None = None,
) -> dict[str, Any]:
    """Train one configuration and measure everything the results table reports.

    `latent_dim` overrides the preset's latent width per token: a narrower latent makes the
    autoencoder a real bottleneck, where reconstruction is lossy (README, "Why structure is not enough").

    With `resume`, training continues from the configuration's last training checkpoint in
    `out_dir` (a finished one is loaded as it is), so an interrupted ablation loses little."""
    from zooscope.analysis.evaluation import evaluate_autoencoder
    from zooscope.analysis.generation import diversity_curve, generate
    from zooscope.analysis.probing import predict_properties, properties_to_dict
    from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig
    from zooscope.autoencoder.training import train_autoencoder

    say = log or (lambda message: None)
    ae_config = AutoencoderConfig.preset(preset)
    if latent_dim is not None:
        ae_config = replace(ae_config, latent_dim=latent_dim)
    tc = _training_config(TrainingConfig.preset(preset), config, epochs=epochs, seed=seed, device=device)
    if preset == "paper" and config.beta >= 1.0:
        tc = replace(tc, lr=PAPER_STRUCTURE_LR)
    say(
        f"[{config.name}] training {config.label}: gamma {tc.gamma}, beta {tc.beta}, lr {tc.lr}, "
        f"{tc.epochs} epochs"
    )
    started = time.perf_counter()
    ae = train_autoencoder(
        zoo, ae_config, tc, out_dir / config.name, scaled(progress, 0.0, 0.7), resume=resume, log=say
    )
    train_seconds = time.perf_counter() - started

    say(f"[{config.name}] evaluating reconstructions of the test split")
    evaluation = evaluate_autoencoder(ae, zoo, "test", scaled(progress, 0.7, 0.8))
    ae.save_evaluation(evaluation.to_dict(), out_dir / config.name)
    say(f"[{config.name}] generating {n_generate} models")
    generation = generate(ae, zoo, n_samples=n_generate, seed=seed, progress=scaled(progress, 0.8, 0.9))
    (out_dir / config.name / "generation.json").write_text(json.dumps(generation.to_dict(), indent=2) + "\n")
    say(f"[{config.name}] probing properties")
    probes = properties_to_dict(predict_properties(ae, zoo))
    curves = None
    if curve:
        curves = [
            diversity_curve(ae, zoo, settings=CURVE_SETTINGS, n_samples=n_generate, seed=seed),
            diversity_curve(
                ae, zoo, settings=SPREAD_SETTINGS, n_samples=n_generate, seed=seed, knob="spread"
            ),
        ]
    report(progress, 1.0, f"{config.name} done")

    agg = evaluation.aggregate
    best_zoo = max(agg["original_accuracy"]["max"], generation.anchors["accuracy"]["max"] or 0.0)
    return {
        "config": asdict(config),
        "training_config": tc.to_dict(),
        "autoencoder_config": ae_config.to_dict(),
        "n_parameters": ae.model.n_parameters,
        # The bottleneck: numbers in one checkpoint's latent against the checkpoint's own parameters.
        "latent_numbers": ae.token_layout.n_tokens * ae_config.latent_dim,
        "checkpoint_parameters": ae.token_layout.arch.n_parameters,
        "train_seconds": train_seconds,
        "timings": _timings(ae.training_log, tc.uses_behaviour),
        "collapsed": _collapsed(ae.training_log),
        "evaluation": agg,
        "best_zoo_accuracy": best_zoo,
        "best_reconstruction_gap": 100.0 * (agg["reconstructed_accuracy"]["max"] - best_zoo),
        "generation": {
            "accuracy": generation.accuracy,
            "anchors": generation.anchors,
            "diversity": generation.diversity,
            "best_generated_gap": 100.0 * ((generation.accuracy["max"] or 0.0) - best_zoo),
        },
        "diversity_curves": curves,
        "probes": probes,
        "artefact": str(out_dir / config.name),
    }


def open_or_build_zoo(
    zoo_dir: Path | None, data_dir: Path, log: LogFn | None = None, *, device: str = "cpu"
) -> Any:
    """The zoo at `zoo_dir`, or the default digits zoo under `data_dir` (built on `device` if missing)."""
    from zooscope.zoo.grid import ZooConfig
    from zooscope.zoo.store import Zoo, build_zoo

    if zoo_dir is not None:
        return Zoo.open(zoo_dir)
    target = data_dir / "zoos" / "default"
    if (target / "manifest.json").exists():
        return Zoo.open(target)
    if log:
        log(f"building the default digits zoo into {target} (a few minutes on a CPU)")
    return build_zoo(ZooConfig.default_digits(), target, device=device)


def run_ablation(
    zoo: Any,
    out_dir: str | Path,
    *,
    preset: str = "cpu",
    epochs: int | None = None,
    configs: Sequence[str] = DEFAULT_CONFIGS,
    query_ablation: bool = False,
    device: str = "auto",
    seed: int = 0,
    n_generate: int = 100,
    results_path: str | Path | None = "docs/results.md",
    command: str | None = None,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
    resume: bool = False,
    latent_dim: int | None = None,
) -> dict[str, Any]:
    """Run the configurations on `zoo`; write results.json (in out_dir and beside results_path) and
    results_path (markdown). Returns the results dict."""
    from zooscope.autoencoder.training import resolve_device

    names = list(configs) + (["csb_noise"] if query_ablation and "csb_noise" not in configs else [])
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown configuration(s) {', '.join(unknown)}; known: {', '.join(ABLATIONS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolved = str(resolve_device(device))
    results: dict[str, Any] = {
        "code_version": zooscope.__version__,
        "command": command,
        "machine": machine_info(resolved),
        "seed": seed,
        "preset": preset,
        "epochs": epochs,
        "latent_dim": latent_dim,  # None: the preset's
        "zoo": _describe_zoo(zoo),
        "configs": {},
    }
    for i, name in enumerate(names):
        sub = scaled(progress, i / len(names), (i + 1) / len(names))
        results["configs"][name] = run_config(
            zoo, ABLATIONS[name], out, preset=preset, epochs=epochs, seed=seed, device=resolved,
            n_generate=n_generate, curve=name in CURVE_CONFIGS, progress=sub, log=log, resume=resume,
            latent_dim=latent_dim,
        )  # fmt: skip
    results["behavioural_step_cost_ratio"] = step_cost_ratio(results["configs"])
    text = json.dumps(_json_safe(results), indent=2) + "\n"
    (out / "results.json").write_text(text)
    if results_path is not None:
        md = Path(results_path)
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(results_markdown(results))
        md.with_suffix(".json").write_text(text)
    return results


def _describe_zoo(zoo: Any) -> dict[str, Any]:
    from zooscope.autoencoder.training import describe_zoo

    info = describe_zoo(zoo)
    info["architecture"] = zoo.architecture.name
    info["checkpoints"] = {split: len(zoo.checkpoints(split=split)) for split in ("train", "val", "test")}
    return info


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


# ---- the markdown page --------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _rows(r: dict[str, Any]) -> dict[str, str]:
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

    return {
        "agreement_mean": f"{_pct(ev['agreement']['mean'])} ± {_pct(ev['agreement']['std'])}",
        "agreement_high": f"{_pct(high['mean'])} (n={high['count']})",
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


def _latent_lines(results: dict[str, Any]) -> list[str]:
    """The latent's size beside the checkpoint's: below 1 the autoencoder must compress."""
    first = next(iter(results["configs"].values()), None)
    if first is None or "latent_numbers" not in first:  # results written before session 9
        return []
    latent, parameters = first["latent_numbers"], first["checkpoint_parameters"]
    width = first["autoencoder_config"]["latent_dim"]
    source = "overrides the preset's" if results.get("latent_dim") is not None else "the preset's"
    return [
        f"- latent: {width} per token ({source}), {latent:,} numbers per checkpoint for its "
        f"{parameters:,} parameters ({latent / parameters:.2f}x)"
    ]


def results_markdown(results: dict[str, Any]) -> str:
    configs = results["configs"]
    names = list(configs)
    rows = {name: _rows(configs[name]) for name in names}
    header = ["metric", *(configs[n]["config"]["label"] for n in names), "paper C+S", "paper C+S+B"]
    lines = [
        "# Results: the structure / behaviour ablation",
        "",
        "Written by `zooscope experiment ablation` (zooscope/experiments/ablation.py); do not edit by hand.",
        "",
        f"- command: `{results.get('command') or 'run_ablation(...)'}`",
        f"- zoo: {results['zoo'].get('path', '?')} ({results['zoo']['architecture']}, "
        f"checkpoints train/val/test {results['zoo']['checkpoints']})",
        f"- preset: {results['preset']}, epochs: {results['epochs'] or 'preset default'}, "
        f"seed: {results['seed']}",
        *_latent_lines(results),
        f"- machine: {results['machine']['platform']}; CPU {results['machine']['cpu']} "
        f"({results['machine']['cpu_threads']} threads); GPU {results['machine']['gpu'] or 'none'}; "
        f"device {results['machine']['device']}; torch {results['machine']['torch']}; "
        f"python {results['machine']['python']}",
        f"- zooscope {results['code_version']}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for key, label in ROW_LABELS.items():
        paper = PAPER_NUMBERS.get(key, ("", ""))
        lines.append("| " + " | ".join([label, *(rows[n][key] for n in names), *paper]) + " |")
    ratio = results.get("behavioural_step_cost_ratio")
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
