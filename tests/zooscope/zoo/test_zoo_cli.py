"""`zooscope zoo build/show/import` on tiny inputs."""

from __future__ import annotations

from pathlib import Path

from public_zoo_layout import write_heldout_zoo, write_public_zoo
from typer.testing import CliRunner

from zooscope.cli.zoo import app
from zooscope.networks.architectures import Architecture
from zooscope.zoo.store import Zoo

runner = CliRunner()


def test_build_then_show(tmp_path: Path) -> None:
    out = tmp_path / "zoo"
    built = runner.invoke(
        app,
        [
            "build",
            "--dataset",
            "digits",
            "--out",
            str(out),
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--inits",
            "kaiming_uniform,normal",
            "--lrs",
            "0.01",
            "--wds",
            "0,0.001",
            "--seed",
            "3",
        ],
    )
    assert built.exit_code == 0, built.output
    zoo = Zoo.open(out)
    assert len(zoo.models) == 4 and zoo.manifest["config"]["seed"] == 3
    assert zoo.manifest["checkpoint_epochs"] == [1]

    shown = runner.invoke(app, ["show", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "test accuracy by epoch" in shown.output and "kaiming_uniform" in shown.output


def test_build_the_tiny_preset(tmp_path: Path) -> None:
    out = tmp_path / "zoo"
    args = ["build", "--preset", "tiny", "--out", str(out), "--seeds", "1", "--epochs", "1"]
    built = runner.invoke(app, args)
    assert built.exit_code == 0, built.output
    assert len(Zoo.open(out).models) == 4  # 2 inits x 2 learning rates x 1 weight decay x 1 seed
    unknown = runner.invoke(app, ["build", "--preset", "huge", "--out", str(tmp_path / "other")])
    assert unknown.exit_code == 1 and "unknown zoo preset" in unknown.output


def test_errors_are_messages_with_exit_code_1(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["show", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "error" in missing.output and "not a folder" in missing.output
    bad_init = runner.invoke(
        app, ["build", "--out", str(tmp_path / "z"), "--inits", "xavier", "--epochs", "1"]
    )
    assert bad_init.exit_code == 1 and "inits must be" in bad_init.output
    assert not (tmp_path / "z").exists()


def test_import_lists_skipped_models(tmp_path: Path) -> None:
    write_public_zoo(tmp_path / "public", Architecture("cnn_s", 1, 28))
    result = runner.invoke(app, ["import", str(tmp_path / "public"), "--out", str(tmp_path / "zoo")])
    assert result.exit_code == 0, result.output
    assert "imported 3 models" in result.output
    assert "skipped 4 models" in result.output and "model_corrupt" in result.output


def test_import_says_when_a_zoo_mixes_activations_and_layouts(tmp_path: Path) -> None:
    write_heldout_zoo(tmp_path / "public")
    result = runner.invoke(app, ["import", str(tmp_path / "public"), "--out", str(tmp_path / "zoo")])
    assert result.exit_code == 0, result.output
    assert "imported 10 models" in result.output and "skipped 2 models" in result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    assert "mix activations (gelu 3, relu 1, sigmoid 3, tanh 3)" in text
    assert "stored as cnn_s-1x28x28" in text


def test_build_keeps_the_checkpoint_epochs_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "zoo"
    args = ["build", "--preset", "tiny", "--out", str(out), "--seeds", "1", "--checkpoint-epochs", "0,1,4"]
    built = runner.invoke(app, args)
    assert built.exit_code == 0, built.output
    zoo = Zoo.open(out)
    assert zoo.manifest["checkpoint_epochs"] == [0, 1, 4]
    assert sorted({record.epoch for record in zoo.checkpoints()}) == [0, 1, 4]
    for bad, says in (("1,x", "whole numbers"), ("3,9", "within 0..4")):
        args = ["build", "--preset", "tiny", "--out", str(tmp_path / bad), "--checkpoint-epochs", bad]
        refused = runner.invoke(app, args)
        assert refused.exit_code in (1, 2) and says in " ".join(refused.output.split()), refused.output


def test_import_refuses_epochs_that_are_not_whole_numbers(tmp_path: Path) -> None:
    write_public_zoo(tmp_path / "public", Architecture("cnn_s", 1, 28))
    args = ["import", str(tmp_path / "public"), "--out", str(tmp_path / "zoo"), "--epochs", "1.5"]
    refused = runner.invoke(app, args)
    assert refused.exit_code in (1, 2) and "whole numbers" in " ".join(refused.output.split())
    assert not (tmp_path / "zoo").exists()
