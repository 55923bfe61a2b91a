"""The autoencoder's targets, checked on an ablation's results, in two regimes.

A latent that can copy (the cpu preset: more latent numbers than the checkpoint has parameters)
is held to the copy targets on the default digits zoo. A latent that compresses (at most
COMPRESSING_RATIO of the parameters: the paper's regime, where the claim that behaviour is needed
is about) is held to the compression targets: more agreement, and generated models that stay
diverse at no cost in accuracy. A page states which regime its run was in.

Each C+S+B column present is checked on its own: the paper's three terms (`csb`) and the cpu
preset's recipe (`csb_stats`, with the layer-statistics term), so the results page shows which
recipe meets which target instead of a single verdict. The slow reproduction test asserts the
same checks (tests/zooscope/experiments/test_reproduction.py).

The best reconstruction is checked twice. Against the best original of the test split, as
docs/method.md §11's reference run measured it ("98.8 % against a best original of 98.0 %"): an exact
copy of the test split scores 0 there. And against the best model of the whole zoo, as the target
is worded: when that model is a training-split checkpoint, only a reconstruction more accurate than
its original can come within 0.5 points, so that row is reported, not required.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The C+S+B configurations the per-recipe targets apply to, in the order the page lists them.
TARGET_CONFIGS = ("csb", "csb_stats")
# The recipe the reproduction is held to: the cpu preset's own (experiment.ABLATIONS).
REQUIRED_CONFIG = "csb_stats"


@dataclass(frozen=True)
class Target:
    label: str
    threshold: float
    at_least: bool  # True: value >= threshold; False: value <= threshold
    unit: str  # "%", "points", "x" or "" (how value and threshold are printed)
    required: bool = True

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.threshold if self.at_least else value <= self.threshold

    def describe(self) -> str:
        return f"{'>=' if self.at_least else '<='} {_format(self.threshold, self.unit)}"


@dataclass(frozen=True)
class TargetCheck:
    target: Target
    values: dict[str, float | None]  # configuration name -> measured value

    def met(self, config: str) -> bool | None:
        return self.target.met(self.values.get(config))


def _best_gap(result: dict[str, Any], reference: float | None) -> float | None:
    best = result["evaluation"]["reconstructed_accuracy"]["max"]
    return None if best is None or reference is None else 100.0 * (best - reference)


def best_test_gap(result: dict[str, Any]) -> float | None:
    """Best reconstruction against the best original of the same test split, in points."""
    return _best_gap(result, result["evaluation"]["original_accuracy"]["max"])


def _r2(result: dict[str, Any]) -> float | None:
    return result.get("probes", {}).get("test_acc", {}).get("embedding", {}).get("r2_test")


# Latent numbers per checkpoint over its parameters at or below which a run is in the compressing
# regime: the paper's CNN3 autoencoders hold 0.55x.
COMPRESSING_RATIO = 0.5
# Generation in the compressing regime: the most diverse setting whose generated models' mean
# accuracy is at most this many points below the anchors'.
GENERATION_ACCURACY_SLACK = 1.0


def latent_ratio(result: dict[str, Any]) -> float | None:
    """Latent numbers per checkpoint over the checkpoint's parameters (ablation.describe_autoencoder)."""
    numbers, parameters = result.get("latent_numbers"), result.get("checkpoint_parameters")
    return numbers / parameters if numbers and parameters else None


def diverse_generation(result: dict[str, Any]) -> float | None:
    """Over the accuracy-vs-diversity curves, the largest mean pairwise weight distance of generated
    models (as % of the anchors') among the settings whose mean accuracy stays within
    GENERATION_ACCURACY_SLACK points of the anchors' mean; 0 when no setting does."""
    anchors = result.get("generation", {}).get("anchors", {}).get("accuracy", {}).get("mean")
    curves = result.get("diversity_curves") or []
    if anchors is None or not curves:
        return None
    kept = [
        point["weight_l2_ratio"]
        for curve in curves
        for point in curve
        if point.get("accuracy_mean") is not None
        and point.get("weight_l2_ratio") is not None
        and 100.0 * (anchors - point["accuracy_mean"]) <= GENERATION_ACCURACY_SLACK
    ]
    return 100.0 * max(kept) if kept else 0.0


def _agreement(r: dict[str, Any]) -> float:
    return 100.0 * r["evaluation"]["agreement"]["mean"]


def _agreement_high(r: dict[str, Any]) -> float:
    return 100.0 * r["evaluation"]["agreement_high_accuracy"]["mean"]


Measure = Callable[[dict[str, Any]], float | None]
_BEST_ROWS: tuple[tuple[Target, Measure], ...] = (
    (Target("best reconstruction vs best test original", -0.5, True, "points"), best_test_gap),
    (Target("best reconstruction vs best zoo model (any split)", -0.5, True, "points", required=False),
     lambda r: r["best_reconstruction_gap"]),  # run_config stores it
    (Target("R^2 for test accuracy, ridge on the embedding", 0.9, True, ""), _r2),
)  # fmt: skip
COPY_TARGETS: tuple[tuple[Target, Measure], ...] = (
    (Target("mean agreement, all test checkpoints", 85.0, True, "%"), _agreement),
    (Target("mean agreement, originals >= 80 %", 97.0, True, "%"), _agreement_high),
    *_BEST_ROWS,
)
COMPRESSING_TARGETS: tuple[tuple[Target, Measure], ...] = (
    (Target("mean agreement, all test checkpoints", 90.0, True, "%"), _agreement),
    (Target("mean agreement, originals >= 80 %", 98.0, True, "%"), _agreement_high),
    *_BEST_ROWS,
    (
        Target(
            "generated diversity (weight L2, % of the anchors') within "
            f"{GENERATION_ACCURACY_SLACK:g} point of the anchors' accuracy",
            50.0,
            True,
            "%",
        ),
        diverse_generation,
    ),
)
# A reconstruction that agrees with its own original fewer than this many points more than with the
# other models' originals is read as the zoo's typical function (specificity_note).
SPECIFIC_MARGIN = 1.0
STEP_COST = Target("a behavioural step over a structure-only step", 1.3, False, "x")


def recorded_ratios(results: dict[str, Any]) -> list[float]:
    """The latent ratios of the run's configurations that recorded one (pages from before the
    latent's size was recorded have none)."""
    ratios = [latent_ratio(c) for c in results["configs"].values()]
    return [ratio for ratio in ratios if ratio is not None]


def compressing(results: dict[str, Any]) -> bool:
    """Whether the run's autoencoders compress (every configuration of a run shares one latent)."""
    known = recorded_ratios(results)
    return bool(known) and max(known) <= COMPRESSING_RATIO


def regime_targets(results: dict[str, Any]) -> tuple[tuple[Target, Measure], ...]:
    return COMPRESSING_TARGETS if compressing(results) else COPY_TARGETS


def step_cost_ratio(configs: dict[str, dict[str, Any]], name: str = "csb") -> float | None:
    """Seconds per step of configuration `name` (behaviour on) over a structure-only step, same run."""
    try:
        behavioural = configs[name]["timings"]["seconds_per_step"]
        structural = configs["structure"]["timings"]["seconds_per_step"]
    except KeyError:
        return None
    return behavioural / structural if behavioural and structural else None


def check_targets(results: dict[str, Any]) -> list[TargetCheck]:
    """Every target against every C+S+B configuration present in `results` (run_ablation's dict)."""
    configs = results["configs"]
    present = [name for name in TARGET_CONFIGS if name in configs]
    checks = [
        TargetCheck(target, {name: value(configs[name]) for name in present})
        for target, value in regime_targets(results)
    ]
    checks.append(TargetCheck(STEP_COST, {name: step_cost_ratio(configs, name) for name in present}))
    return checks


def unmet_required(results: dict[str, Any], config: str = REQUIRED_CONFIG) -> list[str]:
    """Labels of the required targets `config` misses (or could not be measured on)."""
    return [c.target.label for c in check_targets(results) if c.target.required and c.met(config) is not True]


def verdict(results: dict[str, Any], config: str) -> str:
    """One line on `config`: every required target met, or which it missed and which this run could
    not measure (the step cost needs a structure-only run beside it)."""
    required = [c for c in check_targets(results) if c.target.required]
    missed = [c.target.label for c in required if c.met(config) is False]
    unmeasured = [c.target.label for c in required if c.met(config) is None]
    if not missed and not unmeasured:
        return "meets every target"
    parts = [f"misses: {'; '.join(missed)}"] if missed else []
    parts += [f"not measured in this run: {'; '.join(unmeasured)}"] if unmeasured else []
    return " / ".join(parts)


def targets_markdown(results: dict[str, Any]) -> list[str]:
    configs = results["configs"]
    present = [name for name in TARGET_CONFIGS if name in configs]
    if not present:
        return []
    labels = [configs[name]["config"]["label"] for name in present]
    if not recorded_ratios(results):
        regime = ""
    elif compressing(results):
        regime = (
            f" The latent compresses (at most {COMPRESSING_RATIO:g}x the checkpoint's parameters), so "
            "these are the compressing regime's targets: the paper's claim is about this regime. "
            "Structure-only at the same latent and budget, where it ran, is the first column of the "
            "table above. The generation row takes the most diverse setting of the accuracy-vs-"
            "diversity tables below whose mean accuracy stays within "
            f"{GENERATION_ACCURACY_SLACK:g} point of the anchors' (0 %: no setting does)."
        )
    else:
        regime = (
            f" The latent holds more than {COMPRESSING_RATIO:g}x the checkpoint's parameters, so these "
            "are the targets of the cpu preset, whose latent can copy."
        )
    lines = [
        "",
        "## The autoencoder's targets",
        "",
        "Checked by zooscope/experiments/targets.py on the numbers above (the slow reproduction test "
        f"asserts the required ones for `{REQUIRED_CONFIG}`). The best zoo model row is reported, not "
        f"required: see the note above.{regime}",
        "",
        "| target | threshold | " + " | ".join(labels) + " |",
        "|---|---|" + "---|" * len(present),
    ]
    for check in check_targets(results):
        cells = []
        for name in present:
            value, met = check.values.get(name), check.met(name)
            mark = "-" if met is None else ("met" if met else "missed")
            cells.append(f"{_format(value, check.target.unit)} ({mark})")
        label = check.target.label + ("" if check.target.required else " (reported)")
        lines.append(f"| {label} | {check.target.describe()} | " + " | ".join(cells) + " |")
    collapsed = configs.get("behaviour", {}).get("collapsed")
    if collapsed is not None:
        lines += ["", f"Behaviour-only collapses, as the paper reports: {'yes' if collapsed else 'no'}."]
    lines += [line for name in present for line in specificity_note(configs[name])]
    return lines


def specificity_note(result: dict[str, Any]) -> list[str]:
    """Whether a configuration's agreement is its checkpoints' own (docs/method.md §7): its margin
    over the agreement with other models' originals. Absent from results that predate the
    measurement."""
    measured = result["evaluation"].get("specificity")
    if not measured or measured.get("other_originals") is None:
        return []
    own, other = 100.0 * measured["own"], 100.0 * measured["other_originals"]
    mutual = 100.0 * measured["originals_with_each_other"]
    margin = own - other
    reading = (
        "the agreement rows are met by the zoo's typical function, not by each checkpoint's own"
        if margin < SPECIFIC_MARGIN
        else "the reconstructions keep their own checkpoint's function"
    )
    return [
        "",
        f"Specificity, {result['config']['label']}: {own:.1f} % agreement with its own original, "
        f"{other:.1f} % with the other models' originals (the originals with each other: {mutual:.1f} %), "
        f"a margin of {margin:+.1f} points: {reading}.",
    ]


def _format(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "points":
        return f"{value:+.2f} points"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.3f}"
