"""Batched zoo training: determinism, parity with one-at-a-time training, divergence handling."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from zooscope.networks.architectures import INIT_TYPES, Architecture
from zooscope.networks.datasets import ImageDataset, ImageSplit, load_dataset
from zooscope.zoo.grid import ZooConfig, ZooConfigError
from zooscope.zoo.training import BatchedAdam, train_models, train_one_at_a_time


@pytest.fixture(scope="module")
def small_digits() -> ImageDataset:
    """Digits cut to a few hundred images, so a test trains in about a second."""
    full = load_dataset("digits")
    return replace(
        full,
        train=ImageSplit(full.train.x[:256], full.train.y[:256]),
        val=ImageSplit(full.val.x[:64], full.val.y[:64]),
        test=ImageSplit(full.test.x[:128], full.test.y[:128]),
    )


def tiny_config(**changes: object) -> ZooConfig:
    base = ZooConfig.default_digits(
        inits=("kaiming_uniform", "normal"),
        learning_rates=(1e-3, 1e-2),
        weight_decays=(0.0, 1e-3),
        n_seeds=1,
        epochs=2,
        batch_size=32,
        checkpoint_epochs=(0, 2),
    )
    return base.replace(**changes)


def test_two_builds_with_one_seed_give_identical_tensors(small_digits: ImageDataset) -> None:
    config = tiny_config()
    first, second = train_models(config, small_digits), train_models(config, small_digits)
    for epoch in config.checkpoint_epochs:
        for key, value in first.checkpoints[epoch].items():
            assert torch.equal(value, second.checkpoints[epoch][key]), (epoch, key)
    for name, value in first.metrics.items():
        assert torch.equal(value, second.metrics[name]), name
    other_seed = train_models(config.replace(seed=1), small_digits)
    key = next(iter(first.checkpoints[0]))
    assert not torch.equal(first.checkpoints[0][key], other_seed.checkpoints[0][key])


def test_training_learns_and_records_every_epoch(small_digits: ImageDataset) -> None:
    trained = train_models(tiny_config(epochs=3, checkpoint_epochs=(3,)), small_digits)
    assert trained.metrics["test_acc"].shape == (8, 4)
    assert torch.isfinite(trained.metrics["test_acc"]).all()
    best_kaiming = trained.metrics["val_acc"][:4, 3].max()  # kaiming_uniform models come first
    assert best_kaiming > 0.5, "no kaiming model learned digits in 3 epochs"
    assert (trained.metrics["train_loss"][:, 3] < trained.metrics["train_loss"][:, 0]).any()


def test_batched_training_matches_one_model_at_a_time(small_digits: ImageDataset) -> None:
    config = tiny_config(inits=("kaiming_uniform", "kaiming_normal"), weight_decays=(1e-3,))
    together = train_models(config, small_digits)
    alone = train_one_at_a_time(config, small_digits)
    for epoch in config.checkpoint_epochs:
        for key, value in together.checkpoints[epoch].items():
            torch.testing.assert_close(value, alone.checkpoints[epoch][key], atol=2e-4, rtol=1e-3)
    for name in ("test_acc", "val_acc", "train_loss"):
        torch.testing.assert_close(together.metrics[name], alone.metrics[name], atol=2e-2, rtol=0.0)


def test_a_shared_init_zoo_starts_each_scheme_from_one_draw(small_digits: ImageDataset) -> None:
    config = tiny_config(shared_init=True, n_seeds=2)
    specs = config.model_specs()
    assert len({s.init_seed for s in specs if s.init == "normal"}) == 1
    assert len({s.init_seed for s in specs}) == 2 and len({s.seed for s in specs}) == len(specs)
    together = train_models(config, small_digits)
    first = together.checkpoints[0]
    for key, value in first.items():
        by_scheme = {init: value[[i for i, s in enumerate(specs) if s.init == init]] for init in config.inits}
        for init, start in by_scheme.items():  # every model of a scheme starts where the first does
            assert torch.equal(start, start[:1].expand_as(start)), (init, key)
    # The models still train apart (their data orders and learning rates differ), and the draw is
    # not any model's own: the zoo without shared_init starts elsewhere.
    key = "module_list.0.weight"  # biases start at a constant in every zoo (BIAS_INIT)
    last = together.checkpoints[2]
    assert not torch.equal(last[key][0], last[key][1])
    own = train_models(config.replace(shared_init=False), small_digits)
    assert not torch.equal(own.checkpoints[0][key][0], first[key][0])
    alone = train_one_at_a_time(config, small_digits)  # the reference path draws the same init
    for key, value in first.items():
        assert torch.equal(value, alone.checkpoints[0][key])


def test_batched_adam_is_torch_adam_per_model() -> None:
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(3, 7, generator=generator)
    lrs, wds = torch.tensor([1e-3, 1e-2, 3e-1]), torch.tensor([0.0, 1e-2, 1e-1])
    adam = BatchedAdam(weights, lrs, wds)
    references = [torch.nn.Parameter(weights[i].clone()) for i in range(3)]
    optimisers = [
        torch.optim.Adam([p], lr=float(lrs[i]), weight_decay=float(wds[i])) for i, p in enumerate(references)
    ]
    current = weights
    for _ in range(5):
        grads = torch.randn(3, 7, generator=generator)
        current = adam.step(current, grads)
        for i, (p, opt) in enumerate(zip(references, optimisers, strict=True)):
            p.grad = grads[i].clone()
            opt.step()
    torch.testing.assert_close(current, torch.stack([p.detach() for p in references]), atol=1e-6, rtol=1e-5)


def test_divergent_models_are_flagged_frozen_and_kept(small_digits: ImageDataset) -> None:
    config = tiny_config(inits=("kaiming_uniform",), learning_rates=(1e-3, 50.0), divergence_threshold=20.0)
    trained = train_models(config, small_digits)
    lrs = [spec.lr for spec in trained.specs]
    diverged = [i for i, e in enumerate(trained.diverged_epoch) if e is not None]
    assert diverged and all(lrs[i] == 50.0 for i in diverged), "only the lr-50 models should diverge"
    assert len(trained.specs) == config.n_models, "a diverged model was dropped"
    for i in diverged:
        assert trained.diverged_reason[i] and 1 <= trained.diverged_epoch[i] <= config.epochs
    for name, values in trained.metrics.items():
        assert torch.isfinite(values).all(), f"NaN spread into {name}"
    last = trained.checkpoints[config.epochs]
    assert all(v.abs().max() <= config.divergence_threshold for v in last.values())
    # the healthy models train exactly as they would without their diverging neighbours
    healthy = [s for s in config.model_specs() if s.lr != 50.0]
    alone = train_models(config, small_digits, specs=healthy)
    indices = [i for i, s in enumerate(trained.specs) if s.lr != 50.0]
    for key, value in alone.checkpoints[config.epochs].items():
        torch.testing.assert_close(last[key][indices], value)


def test_config_presets_and_round_trip() -> None:
    digits = ZooConfig.default_digits()
    assert digits.n_models == 4 * 5 * 3 * digits.n_seeds and set(digits.inits) == set(INIT_TYPES)
    assert digits.architecture == Architecture("cnn_digits", 1, 8)
    paper = ZooConfig.paper()
    assert paper.n_models == 1200 and paper.batch_size == 32 and paper.epochs == 50
    assert paper.checkpoint_epochs == (20, 30, 40, 50)
    for config in (digits, paper, tiny_config(activation="tanh")):
        assert ZooConfig.from_dict(config.to_dict()) == config
    assert tiny_config(activation="tanh").architecture.activation == "tanh"
    specs = digits.model_specs()
    assert len({s.seed for s in specs}) == len(specs), "two models share a seed"


def test_zoo_presets_by_name() -> None:
    from zooscope.zoo.presets import DEFAULT_ZOO_PRESET, ZOO_PRESETS

    assert DEFAULT_ZOO_PRESET in ZOO_PRESETS
    assert ZooConfig.preset("digits") == ZooConfig.default_digits()
    assert ZooConfig.preset("paper", dataset="cifar10") == ZooConfig.paper("cifar10")
    tiny = ZooConfig.preset("tiny", n_seeds=1)
    assert (tiny.n_models, tiny.dataset, tiny.checkpoint_epochs) == (4, "digits", (2, 4))
    assert ZooConfig.tiny().n_models == 12
    assert ZooConfig.tiny().with_epochs(3).checkpoint_epochs == (2, 3)
    assert ZooConfig.tiny().with_epochs(1).checkpoint_epochs == (1,)
    with pytest.raises(ZooConfigError, match="default_digits"):
        ZooConfig.preset("default_digits")


@pytest.mark.parametrize(
    "changes",
    [
        {"inits": ("xavier",)},
        {"checkpoint_epochs": (0, 99)},
        {"split_fractions": (0.5, 0.5, 0.5)},
        {"learning_rates": (-1.0,)},
        {"checkpoint_epochs": (2, 1)},
    ],
)
def test_bad_configs_are_refused(changes: dict) -> None:
    with pytest.raises(ZooConfigError):
        tiny_config(**changes)


def test_batch_larger_than_training_split_is_refused(small_digits: ImageDataset) -> None:
    with pytest.raises(ZooConfigError, match="batch size"):
        train_models(tiny_config(batch_size=10_000), small_digits)
