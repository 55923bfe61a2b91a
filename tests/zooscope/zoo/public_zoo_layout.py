"""Writes small zoos in the public Model Zoos layout (docs/method.md §10) for the import tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from zooscope.networks.architectures import Architecture, initialise

RESULT_EPOCHS = (0, 1, 2)


def write_model(
    root: Path,
    name: str,
    arch: Architecture,
    seed: int,
    *,
    old_names: bool = False,
    poison: str | None = None,  # "nan", "corrupt", "truncated", "huge" at the last epoch
    shuffle_results: bool = False,
    dropout: float = 0.0,
) -> dict[int, dict[str, torch.Tensor]]:
    """One model folder; returns the state_dict written per epoch (what an import must reproduce)."""
    folder = root / name
    folder.mkdir(parents=True)
    params = {
        "model::type": "CNN3" if arch.family == "cnn3" else "CNN",
        "model::nlin": arch.activation,
        "model::init_type": "kaiming_uniform",
        "model::dropout": dropout,
        "optim::lr": 1e-3 * (1 + seed),
        "optim::wd": 1e-4,
        "seed": seed,
        "training::epochs_train": RESULT_EPOCHS[-1],
        "dataset::dump": "/data/dataset_preprocessed/mnist/dataset.pt",
    }
    (folder / "params.json").write_text(json.dumps(params))
    generator = torch.Generator().manual_seed(seed)
    module = arch.build()
    initialise(module, "kaiming_uniform", generator)
    written = {}
    for epoch in RESULT_EPOCHS:
        with torch.no_grad():
            for p in module.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=generator))
        state = {k: v.clone() for k, v in module.state_dict().items()}
        checkpoint = folder / (f"checkpoint_{epoch}" if old_names else f"checkpoint_{epoch:06d}")
        checkpoint.mkdir()
        last = epoch == RESULT_EPOCHS[-1]
        if last and poison == "nan":
            state["module_list.0.weight"][0, 0, 0, 0] = math.nan
        if last and poison == "huge":
            state["module_list.0.weight"][0, 0, 0, 0] = 1e6
        if last and poison == "corrupt":
            (checkpoint / "checkpoints").write_bytes(b"PK\x03\x04 this is not a torch zip")
        else:
            torch.save(state, checkpoint / "checkpoints")
        if last and poison == "truncated":  # a download cut short: the first half of the file
            data = (checkpoint / "checkpoints").read_bytes()
            (checkpoint / "checkpoints").write_bytes(data[: len(data) // 2])
        torch.save({"state": {}}, checkpoint / "optimizer")
        written[epoch] = state
    lines = [
        {
            "training_iteration": epoch,
            "train_acc": 0.1 + 0.2 * epoch + 0.01 * seed,
            "test_acc": 0.1 + 0.15 * epoch + 0.01 * seed,
            "train_loss": 2.3 - epoch,
            "test_loss": 2.3 - 0.5 * epoch,
        }
        for epoch in RESULT_EPOCHS
    ]
    if shuffle_results:
        lines = lines[::-1]
    (folder / "result.json").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return written


def expected_test_acc(seed: int, epoch: int) -> float:
    return 0.1 + 0.15 * epoch + 0.01 * seed


def write_public_zoo(root: Path, arch: Architecture) -> dict[str, dict[int, dict[str, torch.Tensor]]]:
    """Three good models (one with old checkpoint names and out-of-order results) and four bad ones."""
    dropout = 0.1 if arch.dropout_layers else 0.0
    good = {
        "model_a": write_model(root, "model_a", arch, 1, dropout=dropout),
        "model_b": write_model(
            root, "model_b", arch, 2, old_names=True, shuffle_results=True, dropout=dropout
        ),
        "model_c": write_model(root, "model_c", arch, 3, dropout=dropout),
    }
    write_model(root, "model_nan", arch, 4, poison="nan", dropout=dropout)
    write_model(root, "model_corrupt", arch, 5, poison="corrupt", dropout=dropout)
    write_model(root, "model_huge", arch, 6, poison="huge", dropout=dropout)
    (root / "model_no_params").mkdir()
    (root / "experiment_state.json").write_text("{}")  # a file beside the model folders is ignored
    return good


# The held-out zoo as real public zoos are: CNN-s on MNIST, 12 models, half trained with dropout
# modules (keys 0,4,8,11,14) and half without (0,3,6,9,11), model::nlin varying inside the zoo,
# one checkpoint file cut short and one model gone NaN.
# model_i's model::nlin; odd i have dropout modules, so both layouts see several activations
HELDOUT_ACTIVATIONS = (
    "tanh", "relu", "sigmoid", "gelu", "tanh", "relu", "sigmoid", "gelu", "relu", "sigmoid", "gelu", "tanh",
)  # fmt: skip
HELDOUT_TRUNCATED = "model_05"
HELDOUT_NAN = "model_08"


def write_heldout_zoo(root: Path) -> dict[str, tuple[Architecture, dict[int, dict[str, torch.Tensor]]]]:
    """{folder: (architecture as written, state_dict per epoch)} of the 10 good models."""
    good = {}
    for i in range(12):
        name = f"model_{i:02d}"
        with_dropout = i % 2 == 1
        arch = Architecture("cnn_s", 1, 28, activation=HELDOUT_ACTIVATIONS[i], dropout_layers=with_dropout)
        poison = {HELDOUT_TRUNCATED: "truncated", HELDOUT_NAN: "nan"}.get(name)
        written = write_model(root, name, arch, 10 + i, poison=poison, dropout=0.1 if with_dropout else 0.0)
        if poison is None:
            good[name] = (arch, written)
    return good
