"""Fidelity metrics on hand-made cases, the report's aggregates, and the batched evaluation."""

from __future__ import annotations

import math

import pytest
import torch

from zooscope.analysis.evaluation import (
    ReconstructionItem,
    ReconstructionReport,
    accuracy,
    aggregate_items,
    agreement,
    agreement_matrix,
    behavioural_distance,
    evaluate_reconstructions,
    predict,
    specificity_of,
    structural_distance,
)
from zooscope.networks.architectures import Architecture
from zooscope.networks.datasets import ImageDataset, ImageSplit
from zooscope.networks.parameters import stack_state_dicts
from zooscope.population.forward import module_forward
from zooscope.weightspace.tokens import TokenLayout

ARCH = Architecture("cnn_digits", 1, 8)


def _logits(*classes: list[int], n_classes: int = 3) -> torch.Tensor:
    """Logits [K, N, C] whose argmax is the given class per input (one list per model)."""
    return torch.nn.functional.one_hot(torch.tensor(classes), n_classes).float() * 5.0


def test_accuracy_and_agreement_on_hand_cases() -> None:
    a = _logits([0, 1, 2, 2], [0, 0, 0, 0])
    b = _logits([0, 1, 1, 2], [1, 1, 1, 0])
    y = torch.tensor([0, 1, 2, 0])
    assert accuracy(a, y).tolist() == [0.75, 0.5]
    assert agreement(a, b).tolist() == [0.75, 0.25]
    assert agreement(a, a).tolist() == [1.0, 1.0]


def test_behavioural_distance_is_the_mean_softmax_l2() -> None:
    a = torch.tensor([[[0.0, 0.0], [100.0, 0.0]]])  # softmax (0.5, 0.5) and (1, 0)
    b = torch.tensor([[[100.0, 0.0], [100.0, 0.0]]])  # softmax (1, 0) twice
    expected = (math.sqrt(0.5**2 + 0.5**2) + 0.0) / 2
    assert behavioural_distance(a, b).item() == pytest.approx(expected, abs=1e-6)
    assert behavioural_distance(a, a).tolist() == [0.0]


def test_structural_distance_with_and_without_padding() -> None:
    mask = torch.tensor([[True, True, False]])
    a = torch.tensor([[[3.0, 0.0, 0.0]], [[1.0, 1.0, 0.0]]])
    b = torch.tensor([[[0.0, 4.0, 12.0]], [[1.0, 1.0, 0.0]]])
    assert structural_distance(a, b).tolist() == pytest.approx([13.0, 0.0])  # padding counts
    assert structural_distance(a, b, mask).tolist() == pytest.approx([5.0, 0.0])  # real values only


def _item(cid: str, orig: float, agree: float) -> ReconstructionItem:
    return ReconstructionItem(cid, orig, 0.5, agree, 1.0, 1.0, 0.1)


def test_aggregate_and_high_accuracy_subset() -> None:
    items = [_item("a", 0.9, 0.8), _item("b", 0.79, 0.2), _item("c", 0.8, 0.6)]
    agg = aggregate_items(items)
    assert agg["n"] == 3
    assert agg["agreement"]["mean"] == pytest.approx(1.6 / 3)
    assert agg["agreement"]["max"] == 0.8 and agg["agreement"]["min"] == 0.2
    high = agg["agreement_high_accuracy"]
    assert high["count"] == 2  # 0.8 is included, 0.79 is not
    assert high["mean"] == pytest.approx(0.7)
    assert high["std"] == pytest.approx(0.1)
    nobody = aggregate_items([_item("b", 0.5, 0.2)])["agreement_high_accuracy"]
    assert nobody["count"] == 0 and nobody["mean"] is None


def test_agreement_by_band_of_original_accuracy() -> None:
    items = [_item("a", 0.1, 0.3), _item("b", 0.19, 0.5), _item("c", 0.2, 0.7), _item("d", 1.0, 0.9)]
    bands = aggregate_items(items)["agreement_by_original_accuracy"]
    assert [(band["from"], band["to"], band["count"]) for band in bands] == [
        (0.0, 0.2, 2),  # 0.2 belongs to the next band
        (0.2, 0.5, 1),
        (0.5, 0.8, 0),
        (0.8, None, 1),  # the last band is open above: 1.0 is in it
    ]
    assert bands[0]["agreement"] == pytest.approx(0.4)
    assert bands[0]["original_accuracy"] == pytest.approx(0.145)
    assert bands[2]["agreement"] is None
    assert bands[3]["agreement"] == pytest.approx(0.9)


def _models(k: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    sds = []
    for _ in range(k):
        module = ARCH.build()
        for p in module.parameters():
            torch.nn.init.normal_(p, 0.0, 0.5, generator=generator)
        sds.append(module.state_dict())
    return stack_state_dicts(ARCH, sds)


def _dataset(n: int = 37) -> ImageDataset:
    generator = torch.Generator().manual_seed(1)
    split = ImageSplit(
        torch.randn(n, 1, 8, 8, generator=generator), torch.randint(10, (n,), generator=generator)
    )
    return ImageDataset("toy", split, split, split, 10, (1, 8, 8), (0.0,), (1.0,))


def test_evaluate_identical_models_agree_fully() -> None:
    params, data = _models(5, 0), _dataset()
    result = evaluate_reconstructions(ARCH, params, params, data, TokenLayout.of(ARCH), batch_models=2)
    assert [i.checkpoint_id for i in result.items] == ["0", "1", "2", "3", "4"]
    for i, item in enumerate(result.items):
        sd = {k: v[i] for k, v in params.items()}
        expected = (module_forward(ARCH, sd, data.test.x).argmax(1) == data.test.y).float().mean().item()
        assert item.original_accuracy == pytest.approx(expected)
        assert item.reconstructed_accuracy == pytest.approx(expected)
        assert item.agreement == 1.0
        assert item.structural_distance == 0.0 and item.behavioural_distance == 0.0


def test_evaluate_against_different_models_and_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, data = _models(3, 0), _models(3, 1), _dataset()
    layout = TokenLayout.of(ARCH)
    # Blocks of 5 inputs (37 = 7 x 5 + 2): the per-block sums must add up to whole-split figures.
    monkeypatch.setattr("zooscope.analysis.evaluation.inputs_per_call", lambda arch, models: 5)
    result = evaluate_reconstructions(ARCH, a, b, data, layout, ["x", "y", "z"])
    logits_a = torch.stack(
        [module_forward(ARCH, {k: v[i] for k, v in a.items()}, data.test.x) for i in range(3)]
    )
    logits_b = torch.stack(
        [module_forward(ARCH, {k: v[i] for k, v in b.items()}, data.test.x) for i in range(3)]
    )
    expected_agreement = agreement(logits_a, logits_b)
    expected_l2 = (layout.tokenize(a) - layout.tokenize(b)).flatten(1).norm(dim=1)
    for i, item in enumerate(result.items):
        assert item.agreement == pytest.approx(expected_agreement[i].item())
        assert item.behavioural_distance == pytest.approx(
            behavioural_distance(logits_a, logits_b)[i].item(), rel=1e-5
        )
        assert item.structural_distance == pytest.approx(expected_l2[i].item(), rel=1e-5)
        assert item.structural_distance_real == pytest.approx(item.structural_distance, rel=1e-5)
    loaded = ReconstructionReport.from_dict(result.to_dict())
    assert loaded.items == result.items and loaded.aggregate == result.aggregate


def test_raw_tokens_make_padding_count() -> None:
    a, data = _models(2, 0), _dataset()
    layout = TokenLayout.of(ARCH)
    raw = layout.tokenize(a) + (~layout.mask).float()  # padding of 1 everywhere, real values exact
    result = evaluate_reconstructions(ARCH, a, a, data, layout, reconstructed_tokens=raw)
    padding = (~layout.mask).sum().item()
    assert result.items[0].structural_distance == pytest.approx(math.sqrt(padding))
    assert result.items[0].structural_distance_real == 0.0


def test_predict_matches_module_forward_in_blocks() -> None:
    params, data = _models(3, 2), _dataset()
    predictions = predict(ARCH, params, data.test.x, batch_models=2)
    for i in range(3):
        sd = {k: v[i] for k, v in params.items()}
        assert torch.equal(predictions[i], module_forward(ARCH, sd, data.test.x).argmax(1))


def test_agreement_matrix_counts_matching_predictions_pair_by_pair() -> None:
    a = torch.tensor([[0, 1, 2, 2], [1, 1, 1, 1]])
    b = torch.tensor([[0, 1, 2, 0], [2, 2, 2, 2], [1, 1, 0, 0]])
    expected = torch.tensor([[0.75, 0.5, 0.25], [0.25, 0.0, 0.5]], dtype=torch.float64)
    assert torch.equal(agreement_matrix(a, b), expected)


def test_specificity_tells_a_copy_from_one_generic_model() -> None:
    originals = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1], [1, 1, 0, 0], [1, 0, 1, 0]])
    copy = specificity_of(originals, originals.clone(), ["m0", "m1", "m2", "m3"])
    assert copy["own"] == 1.0
    mutual = (agreement_matrix(originals, originals).sum() - 4) / 12
    assert copy["other_originals"] == pytest.approx(float(mutual))
    assert copy["originals_with_each_other"] == pytest.approx(float(mutual))
    generic = specificity_of(originals, torch.zeros_like(originals), ["m0", "m1", "m2", "m3"])
    # The same network for every checkpoint agrees with its own original no more than with others'.
    assert generic["own"] == pytest.approx(0.5) and generic["other_originals"] == pytest.approx(0.5)


def test_specificity_leaves_out_other_epochs_of_the_same_model() -> None:
    originals = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [1, 1, 1, 1]])
    result = specificity_of(originals, originals.clone(), ["a", "a", "b"])
    # Rows: a@0 against b only (0), a@1 against b only (0.25), b against both a's (0 and 0.25);
    # a@0 against a@1 (0.75) would count if epochs of one model were "others".
    assert result["other_originals"] == pytest.approx((0.0 + 0.25 + 0.125) / 3)
    alone = specificity_of(originals, originals.clone(), ["a", "a", "a"])
    assert alone["own"] is None and alone["other_originals"] is None and alone["count"] == 3


def test_the_evaluation_keeps_the_predictions_specificity_compares() -> None:
    a, b, data = _models(3, 0), _models(3, 1), _dataset()
    layout = TokenLayout.of(ARCH)
    # Blocks of 2 models: the first 3 are kept across both blocks, from the metrics' own forwards.
    report = evaluate_reconstructions(ARCH, a, b, data, layout, batch_models=2, keep_predictions=3)
    pred_a, pred_b = predict(ARCH, a, data.test.x), predict(ARCH, b, data.test.x)
    assert report.predictions is not None
    assert torch.equal(report.predictions[0], pred_a) and torch.equal(report.predictions[1], pred_b)
    assert evaluate_reconstructions(ARCH, a, b, data, layout).predictions is None
    first_two = evaluate_reconstructions(ARCH, a, b, data, layout, batch_models=2, keep_predictions=2)
    assert torch.equal(first_two.predictions[0], pred_a[:2])
    result = specificity_of(*report.predictions, ["p", "q", "r"])
    matrix = agreement_matrix(pred_b, pred_a)
    assert result["own"] == pytest.approx(float(matrix.diagonal().mean()))
    off = (matrix.sum() - matrix.diagonal().sum()) / 6
    assert result["other_originals"] == pytest.approx(float(off))
