"""The ablation of the paper (docs/method.md §9) on one zoo, written up as docs/results.md
(report.py renders the page from the results this module measures).

Configurations, all on the same budget (same preset, same epochs, same seed):
  structure   structure-only baseline C+S (gamma 0.05, beta 1)
  behaviour   behaviour-only (beta 0): the paper reports a collapse to one constant class
  csb         C+S+B (gamma 0.05, beta 0.1), the method
  csb_noise   C+S+B with uniform-noise queries (the query ablation)
  csb_stats   C+S+B plus the layer-statistics term (beyond docs/method.md: the embedding must carry each
              layer's weight statistics; zooscope/autoencoder/layer_statistics.py); the cpu preset's
              own recipe
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

from zooscope.autoencoder.config import DEFAULT_AUTOENCODER_PRESET
from zooscope.experiments.report import results_markdown
from zooscope.experiments.targets import step_cost_ratio
from zooscope.machine import cpu_model
from zooscope.progress import ProgressFn, report, scaled
from zooscope.version import code_version

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
    # The structure-first warm-up belongs to the method's CPU recipe (docs/method.md §11); the baselines
    # run without it, as in the paper (for structure-only it changes nothing).
    warmup: bool = True
    statistics_weight: float = 0.0  # the fourth term beyond docs/method.md (TrainingConfig.statistics_weight)
    contrastive_views: str = "function_preserving"  # TrainingConfig.contrastive_views ("none" needs gamma 0)


ABLATIONS: dict[str, AblationConfig] = {
    "structure": AblationConfig("structure", "structure-only (C+S)", 0.05, 1.0, warmup=False),
    "behaviour": AblationConfig("behaviour", "behaviour-only (beta 0)", 0.05, 0.0, warmup=False),
    "csb": AblationConfig("csb", "C+S+B", 0.05, 0.1),
    "csb_noise": AblationConfig("csb_noise", "C+S+B, noise queries", 0.05, 0.1, query_source="uniform"),
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
# The structure-only baseline's learning rate in the paper (docs/method.md §6); only used with preset "paper".
PAPER_STRUCTURE_LR = 1e-4


def machine_info(device: str) -> dict[str, Any]:
    """What ran the experiment: reported beside every timing."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "device": device,
        "gpu": None,
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _training_config(
    base: Any,
    config: AblationConfig,
    *,
    epochs: int | None,
    seed: int,
    device: str,
    warmup_epochs: int | None = None,
) -> Any:
    """The preset's recipe as `config` runs it. `warmup_epochs` replaces the preset's structure-first
    warm-up (None keeps it) in the configurations that have one."""
    # statistics_weight 0 (the paper's three terms) also drops the preset's schedule of the fourth.
    return base.with_overrides(
        gamma=config.gamma,
        beta=config.beta,
        query_source=config.query_source,
        contrastive_views=config.contrastive_views,
        statistics_weight=config.statistics_weight,
        seed=seed,
        device=device,
        epochs=epochs,  # None: the preset's
        warmup_epochs=warmup_epochs if config.warmup else 0,
    )


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
    validation: bool = False,
    warmup_epochs: int | None = None,
) -> dict[str, Any]:
    """Train one configuration and measure everything the results table reports.

    With `validation`, the val checkpoints are also evaluated, on the val images (`"validation"`
    beside `"evaluation"`), for a choice made on the validation split.

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
    base = TrainingConfig.preset(preset)
    tc = _training_config(base, config, epochs=epochs, seed=seed, device=device, warmup_epochs=warmup_epochs)
    if preset == "paper" and config.beta >= 1.0:
        tc = tc.with_overrides(learning_rate=PAPER_STRUCTURE_LR)
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
    validation_report = evaluate_autoencoder(ae, zoo, "val", inputs="val") if validation else None
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
    result = {
        "config": asdict(config),
        "training_config": tc.to_dict(),
        **describe_autoencoder(ae),
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
    if validation_report is not None:
        result["validation"] = validation_report.aggregate
    return result


def describe_autoencoder(ae: Any) -> dict[str, Any]:
    """Its size, and the bottleneck: numbers in one checkpoint's latent against the checkpoint's own
    parameters (every results page prints their ratio: report.run_lines)."""
    return {
        "autoencoder_config": ae.config.to_dict(),
        "n_parameters": ae.model.n_parameters,
        "latent_numbers": math.prod(ae.config.latent_shape(ae.token_layout.n_tokens)),
        "checkpoint_parameters": ae.token_layout.arch.n_parameters,
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
    preset: str = DEFAULT_AUTOENCODER_PRESET,
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
    warmup_epochs: int | None = None,
) -> dict[str, Any]:
    """Run the configurations on `zoo`; write results.json (in out_dir and beside results_path) and
    results_path (markdown). Returns the results dict."""
    names = list(configs) + (["csb_noise"] if query_ablation and "csb_noise" not in configs else [])
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown configuration(s) {', '.join(unknown)}; known: {', '.join(ABLATIONS)}")
    results = run_configs(
        zoo, [ABLATIONS[name] for name in names], out_dir, preset=preset, epochs=epochs, device=device,
        seed=seed, n_generate=n_generate, command=command, progress=progress, log=log, resume=resume,
        latent_dim=latent_dim, curve_configs=CURVE_CONFIGS, warmup_epochs=warmup_epochs,
    )  # fmt: skip
    results["behavioural_step_cost_ratio"] = step_cost_ratio(results["configs"])
    write_results(results, out_dir, results_path, results_markdown)
    return results


def run_configs(
    zoo: Any,
    configs: Sequence[AblationConfig],
    out_dir: str | Path,
    *,
    preset: str,
    epochs: int | None,
    device: str,
    seed: int,
    n_generate: int,
    command: str | None,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
    resume: bool = False,
    latent_dim: int | None = None,
    curve_configs: Sequence[str] = (),
    validation: bool = False,
    warmup_epochs: int | None = None,
) -> dict[str, Any]:
    """Train and measure each configuration on `zoo` (run_config, each in out_dir/<name>), under
    one record of what ran, where and with which seed: the results dict every results page is
    rendered from."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = results_header(
        zoo, command=command, device=device, seed=seed, preset=preset, epochs=epochs, latent_dim=latent_dim,
        warmup_epochs=warmup_epochs,
    )  # fmt: skip
    resolved = results["machine"]["device"]
    for i, config in enumerate(configs):
        sub = scaled(progress, i / len(configs), (i + 1) / len(configs))
        results["configs"][config.name] = run_config(
            zoo, config, out, preset=preset, epochs=epochs, seed=seed, device=resolved,
            n_generate=n_generate, curve=config.name in curve_configs, progress=sub, log=log,
            resume=resume, latent_dim=latent_dim, validation=validation, warmup_epochs=warmup_epochs,
        )  # fmt: skip
    return results


def results_header(
    zoo: Any,
    *,
    command: str | None,
    device: str,
    seed: int,
    preset: str | None,
    epochs: int | None,
    latent_dim: int | None,
    warmup_epochs: int | None = None,
) -> dict[str, Any]:
    """What ran, where and with which seed, and an empty `configs` for the results to come."""
    from zooscope.autoencoder.training import resolve_device

    return {
        "code_version": code_version(),
        "command": command,
        "machine": machine_info(str(resolve_device(device))),
        "seed": seed,
        "preset": preset,
        "epochs": epochs,
        "latent_dim": latent_dim,  # None: the preset's
        "warmup_epochs": warmup_epochs,  # None: the preset's
        "zoo": _describe_zoo(zoo),
        "configs": {},
    }


def write_results(
    results: dict[str, Any],
    out_dir: str | Path,
    results_path: str | Path | None,
    markdown: Callable[[dict[str, Any]], str],
) -> None:
    """results.json in out_dir; the page `markdown(results)` at results_path, its JSON beside it."""
    from zooscope.analysis.evaluation import json_safe

    text = json.dumps(json_safe(results), indent=2) + "\n"
    (Path(out_dir) / "results.json").write_text(text)
    if results_path is not None:
        md = Path(results_path)
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(markdown(results))
        md.with_suffix(".json").write_text(text)


def _describe_zoo(zoo: Any) -> dict[str, Any]:
    from zooscope.autoencoder.training import describe_zoo

    info = describe_zoo(zoo)
    info["architecture"] = zoo.architecture.name
    info["checkpoints"] = {split: len(zoo.checkpoints(split=split)) for split in ("train", "val", "test")}
    return info
