"""The reproduction as a benchmark: the full ablation on the default digits zoo (slow: pytest -m slow).

It runs what docs/results.md reports (about 35 minutes on the 2-core CPU, zoo build included) and
checks issue 3's targets on the 216 held-out test checkpoints. The cpu preset's own recipe
(csb_stats: C+S+B plus the layer-statistics term) must meet every target. The paper's three-term
C+S+B must meet the fidelity targets; its R^2 is reported in docs/results.md, not asserted.
Behaviour-only must collapse, as the paper reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zooscope.experiment import open_or_build_zoo, run_ablation


def _assert_faithful(result: dict[str, Any]) -> None:
    evaluation = result["evaluation"]
    assert evaluation["agreement"]["mean"] >= 0.85
    assert evaluation["agreement_high_accuracy"]["mean"] >= 0.97
    assert result["best_reconstruction_gap"] >= -0.5  # points below the best zoo model


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_the_cpu_recipe_meets_the_issue_targets_on_the_default_digits_zoo(tmp_path: Path) -> None:
    from zooscope.autoencoder.training import resolve_device

    device = str(resolve_device("auto"))
    zoo = open_or_build_zoo(None, tmp_path / "data", device=device)
    results = run_ablation(
        zoo, tmp_path / "runs", configs=("structure", "behaviour", "csb", "csb_stats"), device=device,
        results_path=tmp_path / "results.md", command="pytest -m slow",
    )  # fmt: skip
    configs = results["configs"]
    _assert_faithful(configs["csb_stats"])
    assert configs["csb_stats"]["probes"]["test_acc"]["embedding"]["r2_test"] >= 0.9
    _assert_faithful(configs["csb"])
    assert configs["behaviour"]["collapsed"]
    # A behavioural step costs at most 1.3x a structure-only step (the paper paid about 2x).
    assert results["behavioural_step_cost_ratio"] <= 1.3
