"""The zoo diagnostics of benchmarks/ (docs/tuning.md cites their tables) run on a tiny zoo and
print what they claim to."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tests.benchmark_scripts import benchmark_module
from zooscope.zoo.grid import ZooConfig
from zooscope.zoo.store import build_zoo


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zoo") / "tiny"
    build_zoo(ZooConfig.tiny(inits=("kaiming_uniform", "normal")), out)
    return out


def _run(name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> list[str]:
    monkeypatch.setattr(sys, "argv", [name, *argv])
    with benchmark_module(name) as module:
        module.main()
    return capsys.readouterr().out.splitlines()


def test_structural_energy_shares_add_up_and_name_each_init(tiny_zoo: Path, monkeypatch, capsys) -> None:
    lines = _run("structural_energy", ["--zoo", str(tiny_zoo)], monkeypatch, capsys)
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| ") and "%" in line]
    assert sorted(row[0].strip() for row in rows) == ["kaiming_uniform", "normal"]
    shares = [float(row[2].strip().rstrip("%")) for row in rows]
    assert sum(shares) == pytest.approx(100.0, abs=0.2)
    # N(0, 1) weights are far larger than Kaiming's: they take most of the standardised energy
    assert rows[0][0].strip() == "normal" and shares[0] > 50.0


def test_behaviour_from_noise_prints_a_row_every_25_steps(tiny_zoo: Path, monkeypatch, capsys) -> None:
    argv = ["--zoo", str(tiny_zoo), "--steps", "25", "--checkpoints", "4", "--queries", "16"]
    lines = _run(
        "behaviour_from_noise",
        [*argv, "--start", "mean", "--relu-gradient-slope", "0.1"],
        monkeypatch,
        capsys,
    )
    rows = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["0", "25"]


def test_the_zoo_mean_network_is_listed_and_responds_less_than_the_originals(
    tiny_zoo: Path, monkeypatch, capsys
) -> None:
    lines = _run(
        "responsive_reconstructions", ["--zoo", str(tiny_zoo), "--shrink", "0,1"], monkeypatch, capsys
    )
    rows = {
        line.split("|")[1].strip(): line.split("|")[2:4]
        for line in lines
        if line.startswith("| ") and "%" in line
    }
    assert set(rows) == {
        "originals",
        "originals shrunk to 0 x their standardised tokens",
        "originals shrunk to 1 x their standardised tokens",
    }
    median = {name: float(cells[0]) for name, cells in rows.items()}
    # a factor of 1 gives the originals back; the mean network is one network, however many rows
    assert median["originals shrunk to 1 x their standardised tokens"] == pytest.approx(
        median["originals"], rel=1e-3
    )
    assert median["originals shrunk to 0 x their standardised tokens"] < median["originals"]


@pytest.mark.parametrize("shared_init", [False, True])
def test_init_share_redraws_the_inits_the_zoo_started_from(tmp_path: Path, shared_init: bool) -> None:
    from zooscope.networks.parameters import FlatLayout
    from zooscope.zoo.store import Zoo

    out = tmp_path / "zoo"
    build_zoo(ZooConfig.tiny(checkpoint_epochs=(0, 4), shared_init=shared_init), out)
    zoo = Zoo.open(out)
    layout = FlatLayout.of(zoo.architecture)
    started = layout.flatten(zoo.load_checkpoints(zoo.checkpoints(epochs=[0])).params)
    by_model = {r.model_id: i for i, r in enumerate(zoo.checkpoints(epochs=[0]))}
    with benchmark_module("init_share") as module:
        drawn = module.initial_weights(zoo.architecture, layout, zoo.models)
    assert torch.equal(drawn, started[[by_model[m.model_id] for m in zoo.models]])


def test_init_share_prints_a_row_per_epoch_and_per_latent_size(tiny_zoo: Path, monkeypatch, capsys) -> None:
    from zooscope.networks.parameters import FlatLayout
    from zooscope.zoo.store import Zoo

    zoo = Zoo.open(tiny_zoo)
    with benchmark_module("init_share") as module:
        drawn = module.initial_weights(zoo.architecture, FlatLayout.of(zoo.architecture), zoo.models)
        same = module.share_table(drawn, drawn)
    assert same["init_share"] == pytest.approx(1.0) and same["moved"] == 0.0

    argv = ["--zoo", str(tiny_zoo), "--split", "train", "--ratios", "0.5,1", "--draws", "50"]
    lines = _run("init_share", argv, monkeypatch, capsys)
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| ") and line[2].isdigit()]
    epochs = sorted({e for m in zoo.models for e in m.checkpoint_epochs})
    assert [row[0].strip() for row in rows] == [*map(str, epochs), "0.5", "1"]
    # A code as large as the model loses no init: the model agrees with itself on every input.
    assert float(rows[-1][1]) == 0.0 and float(rows[-1][2]) == 100.0


def test_init_share_says_a_shared_init_costs_a_code_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "shared"
    build_zoo(ZooConfig.tiny(inits=("kaiming_uniform",), shared_init=True), out)
    lines = _run("init_share", ["--zoo", str(out), "--split", "train"], monkeypatch, capsys)
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert {row[2].strip() for row in rows} == {"0.00"}  # one draw: the inits do not spread
    assert any("share 1 init draw(s)" in line for line in lines)
    assert not any(line.startswith("| latent / parameters") for line in lines)


def test_agreement_by_epoch_groups_the_items_by_their_checkpoint_epoch(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import json

    items = [
        {
            "checkpoint_id": f"m{m:05d}@{epoch}",
            "original_accuracy": accuracy,
            "reconstructed_accuracy": 0.9,
            "agreement": accuracy - 0.1,
        }
        for m in range(2)
        for epoch, accuracy in ((1, 0.5), (12, 0.9))
    ]
    evaluation = tmp_path / "csb" / "evaluation.json"
    evaluation.parent.mkdir()
    evaluation.write_text(json.dumps({"items": items}))
    lines = _run("agreement_by_epoch", [str(evaluation)], monkeypatch, capsys)
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines[2:]]
    assert rows == [["csb", "1", "2", "50.0", "90.0", "40.0"], ["csb", "12", "2", "90.0", "90.0", "80.0"]]
