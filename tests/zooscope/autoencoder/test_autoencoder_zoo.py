"""Training from a zoo folder: `train_autoencoder` and `zooscope ae train` on a tiny built zoo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zooscope.autoencoder.artefact import CONFIG, TrainedAutoencoder
from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig
from zooscope.autoencoder.training import train_autoencoder
from zooscope.cli.autoencoder import app
from zooscope.zoo.grid import ZooConfig
from zooscope.zoo.store import Zoo, build_zoo


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory) -> Zoo:
    # 2 lrs x 10 seeds = 20 models, 2 kept epochs: 16/1/3 models by the 80/5/15 split.
    config = ZooConfig.default_digits(
        inits=("kaiming_uniform",), learning_rates=(1e-3, 1e-2), weight_decays=(0.0,), n_seeds=10,
        epochs=2, checkpoint_epochs=(1, 2),
    )  # fmt: skip
    return build_zoo(config, tmp_path_factory.mktemp("zoo") / "zoo")


def test_train_autoencoder_reads_train_and_val_splits_of_the_zoo(tiny_zoo: Zoo, tmp_path: Path) -> None:
    ae = train_autoencoder(tiny_zoo, AutoencoderConfig.tiny(), TrainingConfig.tiny(), tmp_path)
    assert len(ae.training_log) == 2 and "val_agreement" in ae.training_log[-1]
    meta = json.loads((tmp_path / CONFIG).read_text())
    assert meta["zoo"]["path"] == str(tiny_zoo.path)
    assert len(meta["zoo"]["manifest_sha256"]) == 64
    assert meta["architecture"] == tiny_zoo.architecture.to_dict()


def test_cli_train_writes_an_artefact_with_the_overrides(tiny_zoo: Zoo, tmp_path: Path) -> None:
    out = tmp_path / "ae"
    args = ["train", "--zoo", str(tiny_zoo.path), "--out", str(out), "--preset", "tiny", "--epochs", "1"]
    result = CliRunner().invoke(app, [*args, "--beta", "1", "--gamma", "0.2", "--seed", "7"])
    assert result.exit_code == 0, result.output
    loaded = TrainedAutoencoder.load(out)
    assert loaded.training_config.beta == 1.0 and loaded.training_config.gamma == 0.2
    assert loaded.seed == 7 and "epoch 1/1" in result.output


def test_cli_train_takes_the_relative_structural_loss_and_a_relu_gradient_slope(
    tiny_zoo: Zoo, tmp_path: Path
) -> None:
    out = tmp_path / "ae"
    args = ["train", "--zoo", str(tiny_zoo.path), "--out", str(out), "--preset", "tiny", "--epochs", "1"]
    result = CliRunner().invoke(app, [*args, "--structural-loss", "relative", "--relu-gradient-slope", "0.3"])
    assert result.exit_code == 0, result.output
    recorded = TrainedAutoencoder.load(out).training_config
    assert (recorded.structural_loss, recorded.behavioural_relu_gradient_slope) == ("relative", 0.3)
    refused = CliRunner().invoke(app, [*args, "--relu-gradient-slope", "1.5"])
    assert refused.exit_code != 0 and "behavioural_relu_gradient_slope" in refused.output


def test_cli_train_reports_a_missing_zoo(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["train", "--zoo", str(tmp_path / "nope"), "--out", str(tmp_path / "ae")]
    )
    assert result.exit_code == 1 and "error" in result.output
