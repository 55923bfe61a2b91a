"""The results page is a pure function of results.json: the committed pages render again byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zooscope.experiments.report import results_markdown
from zooscope.experiments.sweeps import sweep_markdown

DOCS = Path(__file__).resolve().parents[3] / "docs"
# The pages `zooscope experiment ablation` wrote as they are. The others beside them
# (results-h200.md, results-csb-stats.md) carry a hand-written preface: superseded runs.
GENERATED_PAGES = (
    "results.md",
    "results-seed1.md",
    "results-seed2.md",
    "results-latent8.md",
    "results-latent8-recipe.md",
    "results-latent16.md",
    "results-latent16-e160.md",
    "results-cnn-s.md",
    "results-cnn-s-kaiming.md",
    "results-cnn-s-shared-init.md",
    "results-cnn-s-epochs.md",
    "results-cnn-s-epochs-l25.md",
)
# The pages the sweeps wrote (zooscope experiment queries | beta | views).
SWEEP_PAGES = (
    "results-queries.md",
    "results-beta.md",
    "results-views.md",
    "results-queries-cnn-s.md",
    "results-beta-cnn-s.md",
    "results-views-cnn-s.md",
)


@pytest.mark.parametrize("page", GENERATED_PAGES)
def test_a_committed_results_page_renders_again_from_its_json(page: str) -> None:
    results = json.loads((DOCS / page).with_suffix(".json").read_text())
    assert results_markdown(results) == (DOCS / page).read_text()


@pytest.mark.parametrize("page", SWEEP_PAGES)
def test_a_committed_sweep_page_renders_again_from_its_json(page: str) -> None:
    results = json.loads((DOCS / page).with_suffix(".json").read_text())
    assert sweep_markdown(results) == (DOCS / page).read_text()
