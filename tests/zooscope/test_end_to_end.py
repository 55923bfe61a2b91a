"""The CI version of the reproduction: tiny zoo -> tiny autoencoder -> evaluate -> generate -> probe.

Every artefact and report is written to disk and read back. Sizes are the smallest that still
give every split at least two checkpoints; the numbers are not meant to be good, only real.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from zooscope.analysis.evaluation import ReconstructionReport, evaluate_autoencoder
from zooscope.analysis.generation import GenerationReport, diversity_curve, generate
from zooscope.analysis.probing import predict_properties, properties_to_dict
from zooscope.autoencoder.artefact import TrainedAutoencoder
from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig
from zooscope.autoencoder.training import train_autoencoder
from zooscope.cli import app
from zooscope.experiments.ablation import run_ablation
from zooscope.networks.checkpoints import load_checkpoint, save_checkpoint
from zooscope.zoo.grid import ZooConfig
from zooscope.zoo.store import Zoo, build_zoo


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    config = ZooConfig.default_digits(
        inits=("kaiming_uniform",),
        learning_rates=(3e-3, 3e-2),
        weight_decays=(0.0,),
        n_seeds=5,  # 10 models: 6 / 2 / 2 by model, two checkpoints each
        epochs=2,
        batch_size=128,
        checkpoint_epochs=(1, 2),
        split_fractions=(0.6, 0.2, 0.2),
    )
    path = tmp_path_factory.mktemp("zoo")
    build_zoo(config, path)
    return Zoo.open(path)  # what was written is what the rest reads


@pytest.fixture(scope="module")
def ae_dir(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ae")
    train_autoencoder(
        zoo, AutoencoderConfig.tiny(), replace(TrainingConfig.tiny(), epochs=1, device="cpu"), out
    )
    return out


def test_library_pipeline_writes_loadable_reports(zoo: Zoo, ae_dir: Path) -> None:
    ae = TrainedAutoencoder.load(ae_dir)
    test_records = zoo.checkpoints(split="test")

    evaluation = evaluate_autoencoder(ae, zoo)
    assert len(evaluation.items) == len(test_records)
    assert evaluation.metadata["n_test_inputs"] == len(zoo.dataset().test)
    for item in evaluation.items:
        assert 0.0 <= item.agreement <= 1.0 and item.structural_distance >= item.structural_distance_real > 0
    # The report's original accuracies are the zoo's own test accuracies (same data, same weights).
    zoo_acc = zoo.load_checkpoints(test_records).properties["test_acc"]
    assert torch.allclose(
        torch.tensor([i.original_accuracy for i in evaluation.items]), zoo_acc.float(), atol=1e-4
    )
    specific = evaluation.aggregate["specificity"]
    assert specific["count"] == len(test_records)
    assert specific["own"] == pytest.approx(evaluation.aggregate["agreement"]["mean"])
    assert 0.0 <= specific["other_originals"] <= 1.0 and 0.0 <= specific["originals_with_each_other"] <= 1.0
    ae.save_evaluation(evaluation.to_dict())
    reread = ReconstructionReport.from_dict(json.loads((ae_dir / "evaluation.json").read_text()))
    assert reread.items == evaluation.items

    generation = generate(ae, zoo, n_samples=4, accuracy_threshold=0.0, seed=1)
    assert len(generation.accuracies) == 4 and generation.params is not None
    assert next(iter(generation.params.values())).shape[0] == 4
    again = generate(ae, zoo, n_samples=4, accuracy_threshold=0.0, seed=1)
    assert again.accuracies == generation.accuracies  # seeded
    text = json.dumps(generation.to_dict())
    assert GenerationReport.from_dict(json.loads(text)).accuracies == generation.accuracies
    # Every anchor's accuracy travels with the report (the dashboard draws their histogram).
    anchors = generation.anchors
    assert len(anchors["accuracies"]) == anchors["count"] > 0
    assert max(anchors["accuracies"]) == pytest.approx(anchors["accuracy"]["max"])

    curve = diversity_curve(ae, zoo, settings=(0.0, 1.0, 4.0, 16.0), n_samples=4, accuracy_threshold=0.0)
    assert [row["setting"] for row in curve] == [0.0, 1.0, 4.0, 16.0]
    # More bandwidth, more spread in weight space: the knob does what it says.
    assert curve[-1]["weight_l2"] > curve[0]["weight_l2"]

    probes = predict_properties(ae, zoo)
    assert set(probes) == {"test_acc", "gen_gap", "epoch"}
    assert set(probes["test_acc"]) == {"embedding", "weight_statistics"}
    json.dumps(properties_to_dict(probes))


def test_cli_commands_write_checkpoints_and_reports(zoo: Zoo, ae_dir: Path, tmp_path: Path) -> None:
    checkpoint_set = zoo.load_checkpoints(zoo.checkpoints(split="test")[:2])
    files = []
    for i in range(2):
        path = tmp_path / f"ckpt{i}.safetensors"
        save_checkpoint({k: v[i] for k, v in checkpoint_set.params.items()}, path)
        files.append(str(path))
    runner = CliRunner()

    result = runner.invoke(app, ["encode", "--ae", str(ae_dir), *files, "--out", str(tmp_path / "emb.json")])
    assert result.exit_code == 0, result.output
    embeddings = json.loads((tmp_path / "emb.json").read_text())["embeddings"]
    assert (
        len(embeddings) == 2 and len(next(iter(embeddings.values()))) == AutoencoderConfig.tiny().latent_dim
    )

    result = runner.invoke(app, ["reconstruct", "--ae", str(ae_dir), *files, "--out", str(tmp_path / "rec")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "rec" / "report.json").read_text())
    assert [item["checkpoint_id"] for item in report["items"]] == ["ckpt0", "ckpt1"]
    rebuilt = load_checkpoint(tmp_path / "rec" / "ckpt0.reconstructed.safetensors")
    assert set(rebuilt) >= set(checkpoint_set.params)

    result = runner.invoke(
        app, ["generate", "--ae", str(ae_dir), "--n", "3", "--out", str(tmp_path / "gen"), "--threshold", "0"]
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "gen").glob("generated_*.safetensors"))) == 3
    assert len(json.loads((tmp_path / "gen" / "report.json").read_text())["accuracies"]) == 3

    result = runner.invoke(app, ["ae", "evaluate", str(ae_dir)])
    assert result.exit_code == 0, result.output
    assert (ae_dir / "evaluation.json").exists()
    assert "agreement, other models' originals" in result.output

    result = runner.invoke(
        app, ["reconstruct", "--ae", str(ae_dir), str(tmp_path / "emb.json"), "--out", "x"]
    )
    assert result.exit_code == 1  # not a checkpoint: a message, not a traceback
    assert "error" in result.output


def test_ablation_writes_results_page(zoo: Zoo, tmp_path: Path) -> None:
    results = run_ablation(
        zoo, tmp_path / "runs", preset="tiny", epochs=1, configs=("structure", "csb"), device="cpu",
        n_generate=3, results_path=tmp_path / "docs" / "results.md", command="pytest",
    )  # fmt: skip
    page = (tmp_path / "docs" / "results.md").read_text()
    assert "| metric | structure-only (C+S) | C+S+B | paper C+S | paper C+S+B |" in page
    assert "mean agreement with original" in page and "torch" in page
    saved = json.loads((tmp_path / "docs" / "results.json").read_text())
    assert set(saved["configs"]) == {"structure", "csb"}
    assert saved["behavioural_step_cost_ratio"] == pytest.approx(results["behavioural_step_cost_ratio"])
    assert saved["configs"]["structure"]["training_config"]["beta"] == 1.0
    assert [c[0]["knob"] for c in saved["configs"]["csb"]["diversity_curves"]] == ["bandwidth", "spread"]
    assert "## Accuracy vs diversity, spread (C+S+B)" in page
    assert (tmp_path / "runs" / "csb" / "evaluation.json").exists()
    # The page ends with the autoencoder's targets for the C+S+B column, one row per target.
    assert "## The autoencoder's targets" in page and "| target | threshold | C+S+B |" in page
    assert "| R^2 for test accuracy, ridge on the embedding | >= 0.900 |" in page
    # The latent's size beside the checkpoint's, so a reader sees whether the autoencoder compresses.
    csb = saved["configs"]["csb"]
    assert csb["checkpoint_parameters"] == zoo.architecture.n_parameters
    n_tokens = TrainedAutoencoder.load(tmp_path / "runs" / "csb").token_layout.n_tokens
    assert csb["latent_numbers"] == AutoencoderConfig.tiny().latent_dim * n_tokens
    assert f"- latent: 4 per token (the preset's), {csb['latent_numbers']:,} numbers per checkpoint" in page


def test_ablation_command_says_which_targets_each_recipe_misses(zoo: Zoo, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["experiment", "ablation", "--zoo", str(zoo.path), "--preset", "tiny", "--epochs", "1",
         "--configs", "csb", "--device", "cpu", "--n-generate", "3", "--out", str(tmp_path / "runs"),
         "--results-path", str(tmp_path / "results.md"), "--latent-dim", "2", "--warmup-epochs", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["latent_dim"] == 2 and saved["configs"]["csb"]["autoencoder_config"]["latent_dim"] == 2
    assert saved["warmup_epochs"] == 1
    assert saved["configs"]["csb"]["training_config"]["beta_warmup_epochs"] == 1
    page = (tmp_path / "results.md").read_text()
    assert "- latent: 2 per token (overrides the preset's)" in page
    assert "structure-first warm-up: 1 epochs" in page
    text = " ".join(result.output.split())  # the console wraps long lines
    verdict = text[text.index("csb: ") : text.index("results written to")]
    # No structure-only run beside it: the step cost is unmeasured, and the verdict says so.
    assert "not measured in this run: a behavioural step over a structure-only step" in verdict


def test_ablation_resume_reuses_finished_training(zoo: Zoo, tmp_path: Path) -> None:
    def run(resume: bool) -> dict:
        return run_ablation(
            zoo, tmp_path / "runs", preset="tiny", epochs=1, configs=("structure",), device="cpu",
            n_generate=3, results_path=None, command="pytest", resume=resume,
        )  # fmt: skip

    run(resume=False)
    log_path = tmp_path / "runs" / "structure" / "training_log.jsonl"
    first_log = log_path.read_text()
    again = run(resume=True)
    # A finished configuration is loaded, not trained again: its log (with the measured seconds of
    # the first run, which a second training would not reproduce) is kept as it was.
    assert log_path.read_text() == first_log
    assert [json.loads(line)["epoch"] for line in first_log.splitlines()] == [1]
    assert again["configs"]["structure"]["timings"]


def test_cli_trains_with_a_smaller_latent(zoo: Zoo, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "ae-latent2"
    result = runner.invoke(
        app,
        ["ae", "train", "--zoo", str(zoo.path), "--out", str(out), "--preset", "tiny", "--epochs", "1",
         "--latent-dim", "2", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    trained = TrainedAutoencoder.load(out)
    assert trained.config.latent_dim == 2
    assert trained.latents(zoo.load_checkpoints(zoo.checkpoints(split="test")).params).shape[-1] == 2
    refused = runner.invoke(
        app, ["ae", "train", "--zoo", str(zoo.path), "--out", str(out), "--latent-dim", "0"]
    )
    assert refused.exit_code != 0
