"""The reproduction as a benchmark: the full ablation on the default digits zoo (slow: pytest -m slow).

It runs what docs/results.md reports (about 43 minutes on the 2-core CPU, zoo build included) and
checks the autoencoder's targets on the 216 held-out test checkpoints with
zooscope/experiments/targets.py, the code that writes the targets table of docs/results.md. Two
readings are ours (README, "The autoencoder's targets, and how we hold them"):
- The targets are held by the cpu preset's recipe (csb_stats: C+S+B plus the layer-statistics
  term). The paper's three-term C+S+B must meet every target but R^2, which it reaches only to
  about 0.67 on this zoo (docs/tuning.md, "What bounds R^2 on this zoo").
- The best reconstruction is held to within 0.5 points of the best TEST original (the reading of
  docs/method.md §11). The best zoo model (98.3 %) is a training-split checkpoint, against which an exact
  copy of the test split scores -0.56; that row is reported, not asserted.
Behaviour-only must collapse, as the paper reports.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from zooscope.experiments.ablation import open_or_build_zoo, run_ablation
from zooscope.experiments.targets import unmet_required


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_the_ablation_meets_its_targets_on_the_default_digits_zoo(tmp_path: Path) -> None:
    from zooscope.autoencoder.training import resolve_device

    device = str(resolve_device("auto"))
    zoo = open_or_build_zoo(None, tmp_path / "data", device=device)
    results = run_ablation(
        zoo, tmp_path / "runs", configs=("structure", "behaviour", "csb", "csb_stats"), device=device,
        results_path=tmp_path / "results.md", command="pytest -m slow",
    )  # fmt: skip
    # The cpu preset's recipe meets every required target, its step cost (at most 1.3x a
    # structure-only step) included; the paper's three terms meet all but R^2.
    assert unmet_required(results, "csb_stats") == []
    assert unmet_required(results, "csb") in ([], ["R^2 for test accuracy, ridge on the embedding"])
    assert results["configs"]["behaviour"]["collapsed"]
