"""`zooscope ae show` on a trained artefact, and a clear error for a folder that is not one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from typer.testing import CliRunner

from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig
from zooscope.autoencoder.training import train_on_checkpoints
from zooscope.cli.autoencoder import app

runner = CliRunner()


def test_show_prints_config_and_curves(tmp_path: Path, checkpoint_sets, digits) -> None:
    tc = dataclasses.replace(TrainingConfig.tiny(), epochs=2)
    train_on_checkpoints(*checkpoint_sets, digits, AutoencoderConfig.tiny(), tc, tmp_path)
    result = runner.invoke(app, ["show", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "cnn_digits" in result.output and "training curves" in result.output
    assert "%" in result.output  # the validation agreement column


def test_show_refuses_a_folder_that_is_not_an_artefact(tmp_path: Path) -> None:
    result = runner.invoke(app, ["show", str(tmp_path)])
    assert result.exit_code == 1
    assert "missing" in result.output
