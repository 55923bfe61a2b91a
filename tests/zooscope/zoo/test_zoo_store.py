"""The zoo format: building, opening, the split by model, checkpoint sets, and broken folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from zooscope.errors import ZooFormatError
from zooscope.zoo.grid import ZooConfig
from zooscope.zoo.store import Zoo, assign_splits, build_zoo
from zooscope.zoo.summary import summarise


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = ZooConfig.default_digits(
        inits=("kaiming_uniform", "uniform"),
        learning_rates=(1e-2, 50.0),  # lr 50 diverges: the zoo must keep and flag those models
        weight_decays=(0.0,),
        n_seeds=3,
        epochs=2,
        batch_size=128,
        checkpoint_epochs=(0, 1, 2),
        split_fractions=(0.5, 0.25, 0.25),
        divergence_threshold=30.0,
    )
    out = tmp_path_factory.mktemp("zoo")
    build_zoo(config, out)
    return out


def test_build_writes_the_documented_layout(zoo_dir: Path) -> None:
    assert {p.name for p in zoo_dir.iterdir()} == {
        "manifest.json",
        "models.json",
        "metrics.json",
        "checkpoints",
    }
    manifest = json.loads((zoo_dir / "manifest.json").read_text())
    for key in (
        "format_version",
        "architecture",
        "dataset",
        "config",
        "seed",
        "code_version",
        "created_at",
        "checkpoint_epochs",
        "split_fractions",
    ):
        assert key in manifest, key
    assert manifest["checkpoint_epochs"] == [0, 1, 2]
    assert ZooConfig.from_dict(manifest["config"]).n_models == 12
    files = sorted(
        p.relative_to(zoo_dir).as_posix() for p in (zoo_dir / "checkpoints").rglob("*.safetensors")
    )
    assert len(files) == 12 * 3 and files[0] == "checkpoints/m00000/epoch_000.safetensors"


def test_split_is_by_model(zoo_dir: Path) -> None:
    zoo = Zoo.open(zoo_dir)
    sides: dict[str, set[str]] = {}
    for split in ("train", "val", "test"):
        for record in zoo.checkpoints(split=split):
            sides.setdefault(record.model_id, set()).add(split)
    assert all(len(s) == 1 for s in sides.values()), "a model has checkpoints on two sides"
    assert [len(zoo.checkpoints(split=s)) for s in ("train", "val", "test")] == [6 * 3, 3 * 3, 3 * 3]


def test_assign_splits_is_seeded_and_sized_as_the_paper() -> None:
    splits = assign_splits(1200, (0.8, 0.05, 0.15), seed=0)
    assert [splits.count(s) for s in ("train", "val", "test")] == [960, 60, 180]
    assert splits == assign_splits(1200, (0.8, 0.05, 0.15), seed=0)
    assert splits != assign_splits(1200, (0.8, 0.05, 0.15), seed=1)


@pytest.mark.parametrize("n", range(3, 25))
def test_assign_splits_leaves_no_split_empty_when_there_are_models_enough(n: int) -> None:
    splits = assign_splits(n, (0.8, 0.05, 0.15), seed=0)
    counts = [splits.count(s) for s in ("train", "val", "test")]
    assert sum(counts) == n and min(counts) >= 1, counts
    assert counts[0] >= n // 2  # the train split only gives what the empty ones need


def test_assign_splits_of_too_few_models_or_a_zero_fraction() -> None:
    assert assign_splits(2, (0.8, 0.05, 0.15), seed=0) == ["train", "train"]  # not 3: as rounded
    assert assign_splits(5, (1.0, 0.0, 0.0), seed=0) == ["train"] * 5


def test_diverged_models_are_kept_and_flagged(zoo_dir: Path) -> None:
    zoo = Zoo.open(zoo_dir)
    assert len(zoo.models) == 12
    flagged = [m for m in zoo.models if m.diverged]
    assert flagged and all(m.lr == 50.0 and m.diverged_reason and m.diverged_epoch for m in flagged)
    assert summarise(zoo).n_diverged == len(flagged)


def test_checkpoint_records_and_checkpoint_set(zoo_dir: Path) -> None:
    zoo = Zoo.open(zoo_dir)
    records = zoo.checkpoints(split="train", epochs=[2])
    assert records and all(r.epoch == 2 and r.split == "train" for r in records)
    checkpoint_set = zoo.load_checkpoints(records)
    assert len(checkpoint_set) == len(records)
    assert checkpoint_set.params["module_list.0.weight"].shape == (len(records), 8, 1, 3, 3)
    for i, record in enumerate(records):
        p = record.properties
        assert p["gen_gap"] == pytest.approx(p["train_acc"] - p["test_acc"])
        metrics = zoo.metrics(record.model_id)
        assert p["test_acc"] == pytest.approx(metrics["test_acc"][metrics["epochs"].index(2)])
        assert checkpoint_set.properties["test_acc"][i] == pytest.approx(p["test_acc"])
        assert checkpoint_set.properties["lr"][i] == pytest.approx(p["lr"])
    assert zoo.dataset().input_shape == zoo.architecture.input_shape
    by_epoch = summarise(zoo).test_acc_by_epoch
    assert set(by_epoch) == {0, 1, 2} and by_epoch[2].count == 12


def test_build_refuses_a_folder_that_is_not_empty(zoo_dir: Path) -> None:
    with pytest.raises(ZooFormatError, match="not an empty folder"):
        build_zoo(ZooConfig.default_digits(n_seeds=1, epochs=1, checkpoint_epochs=(1,)), zoo_dir)


def _broken_copy(zoo_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(zoo_dir, copy)
    return copy


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda d: (d / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda d: (d / "models.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "checkpoints" / "m00003" / "epoch_001.safetensors").unlink(), "missing checkpoint"),
        (lambda d: (d / "metrics.json").write_text('{"models": {}}'), "no metrics for model"),
        (
            lambda d: (d / "manifest.json").write_text(
                json.dumps({**json.loads((d / "manifest.json").read_text()), "format_version": 99})
            ),
            "format_version",
        ),
    ],
    ids=["no-manifest", "bad-json", "missing-checkpoint", "missing-metrics", "future-version"],
)
def test_open_explains_a_broken_folder(zoo_dir: Path, tmp_path: Path, break_it, message: str) -> None:
    copy = _broken_copy(zoo_dir, tmp_path)
    break_it(copy)
    with pytest.raises(ZooFormatError, match=message):
        Zoo.open(copy)


def test_a_checkpoint_of_the_wrong_shape_is_reported(zoo_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    copy = _broken_copy(zoo_dir, tmp_path)
    save_file(
        {"module_list.0.weight": torch.zeros(2, 2)},
        str(copy / "checkpoints" / "m00000" / "epoch_000.safetensors"),
    )
    zoo = Zoo.open(copy)
    with pytest.raises(ZooFormatError, match="does not hold"):
        zoo.load_checkpoints(zoo.checkpoints(epochs=[0])[:1])


def test_every_zoo_preset_name_builds_a_config() -> None:
    from zooscope.zoo.grid import ZooConfig
    from zooscope.zoo.presets import ZOO_PRESETS

    configs = {name: ZooConfig.preset(name) for name in ZOO_PRESETS}
    cnn_s = configs["mnist5k-cnn-s"]
    assert (cnn_s.dataset, cnn_s.architecture.name, cnn_s.n_models) == ("mnist5k", "cnn_s-1x28x28", 96)
    assert configs["digits"] == ZooConfig.default_digits() and configs["tiny"].n_models == 12
    kaiming = configs["mnist5k-cnn-s-kaiming"]
    assert kaiming.n_models == 96 and set(kaiming.inits) == {"kaiming_uniform", "kaiming_normal"}
    assert kaiming.replace(inits=cnn_s.inits, n_seeds=cnn_s.n_seeds) == cnn_s  # the same grid otherwise
    assert configs["mnist5k-cnn-s-shared-init"] == kaiming.replace(shared_init=True)
    assert not any(
        config.shared_init for name, config in configs.items() if name != "mnist5k-cnn-s-shared-init"
    )
