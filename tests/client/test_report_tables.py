"""`zooscope client report` tables for each report shape: the contract's and the worker's."""

from __future__ import annotations

from rich.console import Console

from zooscope.cli.client_tables import generated_rows, report_tables


def _render(report: dict) -> str:
    console = Console(record=True, width=200)
    for table in report_tables(report):
        console.print(table)
    return console.export_text()


def test_reconstruction_report_shows_aggregate_and_items():
    report = {
        "aggregate": {"agreement": {"mean": 0.91, "std": 0.02}},
        "items": [
            {
                "checkpoint_id": "c1",
                "original_accuracy": 0.9,
                "reconstructed_accuracy": 0.85,
                "agreement": 0.91,
                "reconstruction_id": "r1",
            }
        ],
    }
    text = _render(report)
    assert "mean=0.91" in text and "c1" in text and "r1" in text and "0.85" in text


def test_encode_report_in_both_shapes_is_a_count_and_width():
    worker = {"dim": 3, "items": [{"checkpoint_id": "a", "embedding": [1.0, 2.0, 3.0]}] * 2}
    contract = {"embeddings": [[1.0, 2.0, 3.0]] * 2}
    for report in (worker, contract):
        text = _render(report)
        assert "count" in text and "2" in text and "width" in text and "3" in text
        assert "per checkpoint" not in text


def test_generate_report_worker_shape_pairs_ids_with_accuracies():
    report = {
        "generated_ids": ["g1", "g2"],
        "accuracies": [0.5, 0.7],
        "accuracy": {"mean": 0.6},
        "anchors": {"count": 5, "accuracy": {"mean": 0.8}},
        "diversity": {"weight_l2_ratio": 0.3},
    }
    assert generated_rows(report) == [
        {"checkpoint_id": "g1", "accuracy": 0.5},
        {"checkpoint_id": "g2", "accuracy": 0.7},
    ]
    text = _render(report)
    assert "g2" in text and "weight_l2_ratio" in text and "count" in text


def test_generate_report_contract_shape():
    report = {"generated": [{"checkpoint_id": "g9", "accuracy": 0.4}], "anchors": {"accuracies": [0.8, 0.9]}}
    text = _render(report)
    assert "g9" in text and "mean accuracy" in text and "0.85" in text


def test_unknown_report_falls_back_to_key_values():
    assert "something" in _render({"something": 1})
