"""Fidelity of reconstructions: accuracy, agreement, structural and behavioural distance.

Every report carries, per checkpoint, the original and its reconstruction side by side
(docs/method.md §7). Accuracy alone overstates fidelity (a weak original can come back as a better
model), so agreement and distances are always reported beside it.

All model forwards are batched `population_forward` calls over blocks of models and blocks of
inputs; no Python loop over models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from zooscope.errors import ArtefactError, ZooscopeError
from zooscope.networks.architectures import ACTIVATION_NAMES, Architecture, activation_codes
from zooscope.networks.parameters import StackedParams, n_models, stack_state_dicts
from zooscope.population.batching import concat, inputs_per_call, spans, take, to_device
from zooscope.population.forward import population_forward
from zooscope.progress import ProgressFn, report, scaled
from zooscope.version import code_version

if TYPE_CHECKING:  # only for annotations: the library modules import each other lazily
    from zooscope.autoencoder.artefact import TrainedAutoencoder
    from zooscope.networks.datasets import ImageDataset
    from zooscope.weightspace.tokens import TokenLayout
    from zooscope.zoo.store import Zoo

# Agreement is also reported over the originals that work (at least 80 %, the paper's SVHN anchor
# threshold, docs/method.md §8): failed originals rebuilt as working models pull the mean over all
# down (docs/method.md §11).
HIGH_ACCURACY_THRESHOLD = 0.8
# Lower edges of the bands of original accuracy that agreement is also reported by: a zoo's weak
# members (a diverged or barely trained model) are where a compressing latent loses agreement,
# and the mean over all checkpoints hides where.
ACCURACY_BAND_EDGES = (0.0, 0.2, 0.5, 0.8)
METRICS = (
    "original_accuracy",
    "reconstructed_accuracy",
    "agreement",
    "structural_distance",
    "structural_distance_real",
    "behavioural_distance",
)
REPORT_VERSION = 1
# Cross-agreement (`specificity`) compares each reconstruction with the originals of OTHER models:
# at most this many checkpoints take part (the first ones), so the predictions it keeps from the
# evaluation's forwards and its K x K matrices stay small whatever the split's size.
SPECIFICITY_MAX_CHECKPOINTS = 512


# ---- metrics on batched logits and tokens ----------------------------------------------------------
def accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of correct predictions per model: logits [K, N, C], labels [N] -> [K]."""
    return (logits.argmax(-1) == y.to(logits.device)).float().mean(-1)


def agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Fraction of inputs on which two models predict the same class: [K, N, C] x2 -> [K]."""
    return (logits_a.argmax(-1) == logits_b.argmax(-1)).float().mean(-1)


def behavioural_distance(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Mean over inputs of the L2 distance between the two softmax outputs: [K, N, C] x2 -> [K]."""
    return (logits_a.softmax(-1) - logits_b.softmax(-1)).norm(dim=-1).mean(-1)


def structural_distance(
    tokens_a: torch.Tensor, tokens_b: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """L2 distance between token tensors [K, T, W] -> [K].

    Without `mask`: over every entry, padding included, as the paper reports it (a decoder that
    writes non-zero padding pays for it). With `mask` [T, W]: over the real parameters only.
    """
    diff = (tokens_a - tokens_b).float()
    if mask is not None:
        diff = diff[:, mask.to(diff.device)]
    return diff.flatten(1).norm(dim=1)


# ---- the report ---------------------------------------------------------------------------------
def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (NaN: the diversity of fewer than two models; infinity)
    turned into None, through dicts, lists and tuples (tuples become lists): strict JSON has no
    NaN or Infinity, so the reports and results.json stay readable by any JSON parser."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class ReconstructionItem:
    """One checkpoint and its reconstruction."""

    checkpoint_id: str
    original_accuracy: float
    reconstructed_accuracy: float
    agreement: float
    structural_distance: float
    structural_distance_real: float
    behavioural_distance: float


@dataclass
class ReconstructionReport:
    items: list[ReconstructionItem]
    aggregate: dict[str, Any]
    # Not serialised by to_dict (tensors): the caller saves them as safetensors if it wants.
    reconstructed: StackedParams | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Predicted classes [M, N] of the first M originals and of their reconstructions, where the
    # evaluation was asked to keep them (evaluate_reconstructions' `keep_predictions`); not serialised.
    predictions: tuple[torch.Tensor, torch.Tensor] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "code_version": code_version(),
            "metadata": self.metadata,
            "aggregate": self.aggregate,
            "items": [asdict(item) for item in self.items],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReconstructionReport:
        if data.get("version") != REPORT_VERSION:
            raise ArtefactError(
                f"reconstruction report version {data.get('version')!r} is not {REPORT_VERSION}; "
                "re-run the evaluation with this zooscope"
            )
        items = [
            ReconstructionItem(**{k: _float_or_nan(v) for k, v in item.items()}) for item in data["items"]
        ]
        return cls(items=items, aggregate=data["aggregate"], metadata=data.get("metadata", {}))

    def best_gap(self) -> float:
        """Best reconstruction minus best original, in accuracy points (the paper's column)."""
        return 100.0 * (
            self.aggregate["reconstructed_accuracy"]["max"] - self.aggregate["original_accuracy"]["max"]
        )


def _float_or_nan(value: Any) -> Any:
    return math.nan if value is None else value


def summarise(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, std, max and min of a list; None (JSON null) where the list is empty."""
    if len(values) == 0:
        return {"mean": None, "std": None, "max": None, "min": None}
    t = torch.tensor(list(values), dtype=torch.float64)
    return {
        "mean": float(t.mean()),
        "std": float(t.std(unbiased=False)),
        "max": float(t.max()),
        "min": float(t.min()),
    }


def aggregate_items(
    items: Sequence[ReconstructionItem], threshold: float = HIGH_ACCURACY_THRESHOLD
) -> dict[str, Any]:
    """Per-metric summaries, plus agreement over the originals whose accuracy is >= threshold."""
    out: dict[str, Any] = {"n": len(items)}
    for metric in METRICS:
        out[metric] = summarise([getattr(item, metric) for item in items])
    working = [item.agreement for item in items if item.original_accuracy >= threshold]
    out["agreement_high_accuracy"] = {"threshold": threshold, "count": len(working), **summarise(working)}
    out["agreement_by_original_accuracy"] = agreement_by_band(items)
    return out


def agreement_by_band(
    items: Sequence[ReconstructionItem], edges: Sequence[float] = ACCURACY_BAND_EDGES
) -> list[dict[str, Any]]:
    """Agreement over the originals in each band of accuracy [edges[i], edges[i+1]) (the last
    band open above): count, mean, and the band's mean original and reconstructed accuracy."""
    bands = []
    for i, low in enumerate(edges):
        high = edges[i + 1] if i + 1 < len(edges) else math.inf
        members = [item for item in items if low <= item.original_accuracy < high]
        bands.append(
            {
                "from": low,
                "to": None if math.isinf(high) else high,
                "count": len(members),
                **{
                    field: summarise([getattr(item, field) for item in members])["mean"]
                    for field in ("agreement", "original_accuracy", "reconstructed_accuracy")
                },
            }
        )
    return bands


# ---- evaluation ---------------------------------------------------------------------------------
def predict(
    arch: Architecture,
    params: StackedParams,
    x: torch.Tensor,
    *,
    batch_models: int = 256,
    device: torch.device | str | None = None,
    activations: torch.Tensor | None = None,
) -> torch.Tensor:
    """Predicted classes [K, N] of K models on inputs [N, C, H, W], in blocks of models and inputs;
    `activations`: per-model activation codes where they differ (CheckpointSet.activations)."""
    device = torch.device(device) if device is not None else next(iter(params.values())).device
    rows = []
    with torch.no_grad():
        for block in spans(n_models(params), batch_models):
            sub = to_device(take(params, block), device)
            own = None if activations is None else activations[block]
            step = inputs_per_call(arch, block.stop - block.start)
            rows.append(
                torch.cat(
                    [
                        population_forward(arch, sub, x[s].to(device), activations=own).argmax(-1).cpu()
                        for s in spans(x.shape[0], step)
                    ],
                    dim=1,
                )
            )
    return torch.cat(rows)


def _behaviour_sums(
    arch: Architecture,
    originals: StackedParams,
    reconstructions: StackedParams,
    x: torch.Tensor,
    y: torch.Tensor,
    progress: ProgressFn | None,
    activations: torch.Tensor | None = None,
    keep: int = 0,
) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Per-model sums over all inputs of: correct (original, reconstruction), agreement, softmax L2;
    and the predicted classes [keep, N] of the first `keep` originals and reconstructions."""
    k = n_models(originals)
    device = next(iter(originals.values())).device
    sums = {name: torch.zeros(k, dtype=torch.float64) for name in ("correct_o", "correct_r", "agree", "dist")}
    kept: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
    step = inputs_per_call(arch, k)
    blocks = list(spans(x.shape[0], step))
    for i, block in enumerate(blocks):
        xb, yb = x[block].to(device), y[block].to(device)
        logits_o = population_forward(arch, originals, xb, activations=activations)
        logits_r = population_forward(arch, reconstructions, xb, activations=activations)
        n = xb.shape[0]
        sums["correct_o"] += (accuracy(logits_o, yb) * n).double().cpu()
        sums["correct_r"] += (accuracy(logits_r, yb) * n).double().cpu()
        sums["agree"] += (agreement(logits_o, logits_r) * n).double().cpu()
        sums["dist"] += (behavioural_distance(logits_o, logits_r) * n).double().cpu()
        for store, logits in zip(kept, (logits_o, logits_r), strict=True):
            store.append(logits[:keep].argmax(-1).cpu())
        report(progress, (i + 1) / len(blocks), f"inputs {block.stop}/{x.shape[0]}")
    return sums, (torch.cat(kept[0], dim=1), torch.cat(kept[1], dim=1))


@torch.no_grad()
def evaluate_reconstructions(
    arch: Architecture,
    originals: StackedParams,
    reconstructions: StackedParams,
    dataset: ImageDataset,
    token_layout: TokenLayout,
    checkpoint_ids: Sequence[str] | None = None,
    batch_models: int = 256,
    progress: ProgressFn | None = None,
    *,
    reconstructed_tokens: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    activations: torch.Tensor | None = None,
    keep_predictions: int = 0,
) -> ReconstructionReport:
    """Compare K originals with their reconstructions on the FULL test split of `dataset`.

    `activations`: per-checkpoint activation codes where they differ (CheckpointSet.activations).
    `keep_predictions`: the report keeps the predicted classes of the first that many originals
    and reconstructions (`predictions`), taken from the same forwards as the metrics.

    `reconstructed_tokens` [K, T, W]: the decoder's raw output, padding included, for the
    paper's structural distance; without it the reconstructions are re-tokenized, so padding is
    zero and both structural distances agree. `device`: where the forwards run (default: where
    `originals` are).
    """
    k = n_models(originals)
    if n_models(reconstructions) != k:
        raise ZooscopeError(f"{k} originals but {n_models(reconstructions)} reconstructions")
    ids = list(checkpoint_ids) if checkpoint_ids is not None else [str(i) for i in range(k)]
    if len(ids) != k:
        raise ZooscopeError(f"{len(ids)} checkpoint ids for {k} checkpoints")
    device = torch.device(device) if device is not None else next(iter(originals.values())).device
    x, y = dataset.test.x, dataset.test.y
    mask = token_layout.mask

    items: list[ReconstructionItem] = []
    kept: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
    blocks = list(spans(k, batch_models))
    for b, block in enumerate(blocks):
        orig = to_device(take(originals, block), device)
        rec = to_device(take(reconstructions, block), device)
        sub = scaled(progress, b / len(blocks), (b + 1) / len(blocks))
        own = None if activations is None else activations[block]
        keep = max(0, min(block.stop, keep_predictions) - block.start)
        sums, predictions = _behaviour_sums(arch, orig, rec, x, y, sub, own, keep)
        for store, predicted in zip(kept, predictions, strict=True):
            store.append(predicted)
        tokens_o = token_layout.tokenize(orig)
        tokens_r = (
            reconstructed_tokens[block].to(device)
            if reconstructed_tokens is not None
            else token_layout.tokenize(rec)
        )
        s_all = structural_distance(tokens_o, tokens_r).cpu()
        s_real = structural_distance(tokens_o, tokens_r, mask).cpu()
        n = x.shape[0]
        for j, index in enumerate(range(block.start, block.stop)):
            items.append(
                ReconstructionItem(
                    checkpoint_id=ids[index],
                    original_accuracy=float(sums["correct_o"][j] / n),
                    reconstructed_accuracy=float(sums["correct_r"][j] / n),
                    agreement=float(sums["agree"][j] / n),
                    structural_distance=float(s_all[j]),
                    structural_distance_real=float(s_real[j]),
                    behavioural_distance=float(sums["dist"][j] / n),
                )
            )
    report(progress, 1.0, "evaluated")
    metadata = {
        "architecture": arch.to_dict(),
        "dataset": getattr(dataset, "name", None),
        "n_test_inputs": int(x.shape[0]),
        "structural_distance_includes_padding": reconstructed_tokens is not None,
    }
    if activations is not None:  # `architecture` names one activation; say which ran, how often
        names = [ACTIVATION_NAMES[code] for code in activations.tolist()]
        metadata["activations"] = {name: names.count(name) for name in sorted(set(names))}
    predictions = (torch.cat(kept[0]), torch.cat(kept[1])) if keep_predictions > 0 else None
    return ReconstructionReport(items, aggregate_items(items), reconstructions, metadata, predictions)


def agreement_matrix(pred_a: torch.Tensor, pred_b: torch.Tensor) -> torch.Tensor:
    """[K, M] share of inputs on which model i of `pred_a` [K, N] and model j of `pred_b` [M, N]
    predict the same class."""
    n_classes = int(max(pred_a.max(), pred_b.max())) + 1
    counts = torch.zeros(pred_a.shape[0], pred_b.shape[0], dtype=torch.float64)
    for c in range(n_classes):
        counts += (pred_a == c).double() @ (pred_b == c).double().T
    return counts / pred_a.shape[1]


def specificity_of(
    pred_originals: torch.Tensor, pred_reconstructions: torch.Tensor, groups: Sequence[str]
) -> dict[str, Any]:
    """Whether reconstructions keep THEIR original's function or just any good model's.

    `groups[i]` names the model checkpoint i belongs to (its epochs are one model): "others" are
    the originals of the other models. Returns the mean agreement of each reconstruction with its
    own original, with the other models' originals, and of the originals with each other's (what
    swapping in another member of the zoo would give). A reconstruction that agrees with its own
    original no more than with the others' has learnt the zoo's typical function, not the
    checkpoint's."""
    k = pred_originals.shape[0]
    group_ids = {name: index for index, name in enumerate(dict.fromkeys(groups))}
    codes = torch.tensor([group_ids[name] for name in groups])
    others = codes[:, None] != codes[None, :]
    empty = {"count": k, "own": None, "other_originals": None, "originals_with_each_other": None}
    if k == 0 or not bool(others.any()):
        return empty
    recon_vs_orig = agreement_matrix(pred_reconstructions, pred_originals)
    orig_vs_orig = agreement_matrix(pred_originals, pred_originals)
    rows = others.any(dim=1)

    def mean_over_others(matrix: torch.Tensor) -> float:
        per_row = (matrix * others).sum(dim=1)[rows] / others.sum(dim=1)[rows]
        return float(per_row.mean())

    return {
        "count": k,
        "own": float(recon_vs_orig.diagonal().mean()),
        "other_originals": mean_over_others(recon_vs_orig),
        "originals_with_each_other": mean_over_others(orig_vs_orig),
    }


# ---- high-level calls (the CLI and the service's worker use these) ------------------------------
def reconstruct_with_tokens(
    ae: TrainedAutoencoder, params: StackedParams, batch_models: int = 256
) -> tuple[StackedParams, torch.Tensor | None]:
    """The autoencoder's reconstructions, and its raw decoded tokens where the artefact exposes them."""
    parts: list[StackedParams] = []
    tokens: list[torch.Tensor] = []
    raw = getattr(ae, "reconstruct_tokens", None)  # optional: raw decoder output, padding included
    for block in spans(n_models(params), batch_models):
        sub = take(params, block)
        if callable(raw):
            t = raw(sub)
            tokens.append(t.detach().cpu())
            parts.append(to_device(ae.token_layout.detokenize(t, reference=sub), "cpu"))
        else:
            parts.append(to_device(ae.reconstruct_params(sub), "cpu"))
    return {k: v.detach() for k, v in concat(parts).items()}, (torch.cat(tokens) if tokens else None)


def checkpoint_name(record: Any) -> str:
    """How reports name a zoo checkpoint: its own id where it has one, else model_id@epoch."""
    explicit = getattr(record, "checkpoint_id", None)
    return str(explicit) if explicit else f"{record.model_id}@{record.epoch}"


@torch.no_grad()
def evaluate_autoencoder(
    ae: TrainedAutoencoder,
    zoo: Zoo,
    split: str = "test",
    progress: ProgressFn | None = None,
    *,
    batch_models: int = 256,
    inputs: str = "test",
) -> ReconstructionReport:
    """Reconstruct every checkpoint of one split of `zoo` and evaluate it on one split of the zoo's
    data (`inputs`: the test images, or "val" where a choice is made on the validation split)."""
    records = zoo.checkpoints(split=split)
    if not records:
        raise ZooscopeError(f"the zoo has no checkpoints in split {split!r}")
    if inputs not in ("train", "val", "test"):
        raise ValueError(f"inputs must be a data split (train, val or test), not {inputs!r}")
    data = zoo.dataset()
    if inputs != "test":  # evaluate_reconstructions runs the models on a data set's test split
        data = replace(data, test=getattr(data, inputs))
    checkpoints = zoo.load_checkpoints(records)
    report(progress, 0.0, f"reconstructing {len(records)} checkpoints")
    reconstructed, tokens = reconstruct_with_tokens(ae, checkpoints.params, batch_models)
    report(progress, 0.2, "evaluating")
    result = evaluate_reconstructions(
        ae.architecture,
        checkpoints.params,
        reconstructed,
        data,
        ae.token_layout,
        [checkpoint_name(r) for r in records],
        batch_models,
        scaled(progress, 0.2, 1.0),
        reconstructed_tokens=tokens,
        device=_device_of(ae),
        activations=checkpoints.activations,
        keep_predictions=SPECIFICITY_MAX_CHECKPOINTS,
    )
    assert result.predictions is not None  # asked for above
    pred_originals, pred_reconstructions = result.predictions
    groups = [r.model_id for r in records][: pred_originals.shape[0]]
    result.aggregate["specificity"] = specificity_of(pred_originals, pred_reconstructions, groups)
    result.metadata["split"] = split
    result.metadata["inputs"] = inputs
    return result


@torch.no_grad()
def reconstruct_and_evaluate(
    ae: TrainedAutoencoder,
    state_dicts: Sequence[dict[str, torch.Tensor]],
    dataset: ImageDataset | str,
    ids: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
    *,
    batch_models: int = 256,
    activations: Sequence[str] | None = None,
) -> ReconstructionReport:
    """Reconstruct uploaded checkpoints and evaluate them on `dataset`'s test split.

    `activations`: each checkpoint's own activation (checkpoints of a zoo that mixes them); None
    runs every checkpoint, and its reconstruction, with the autoencoder's architecture's."""
    if isinstance(dataset, str):
        from zooscope.networks.datasets import load_dataset

        dataset = load_dataset(dataset)
    codes = None
    if activations is not None and set(activations) != {ae.architecture.activation}:
        codes = activation_codes(activations)
        if codes.shape[0] != len(state_dicts):
            raise ZooscopeError(f"{codes.shape[0]} activations for {len(state_dicts)} checkpoints")
    params = stack_state_dicts(ae.architecture, state_dicts)
    reconstructed, tokens = reconstruct_with_tokens(ae, params, batch_models)
    report(progress, 0.2, "evaluating")
    return evaluate_reconstructions(
        ae.architecture,
        params,
        reconstructed,
        dataset,
        ae.token_layout,
        ids,
        batch_models,
        scaled(progress, 0.2, 1.0),
        reconstructed_tokens=tokens,
        device=_device_of(ae),
        activations=codes,
    )


def _device_of(ae: Any) -> torch.device:
    return torch.device(getattr(ae, "device", "cpu"))
