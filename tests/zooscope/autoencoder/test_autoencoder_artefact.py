"""The artefact directory: save/load round trip, the high-level calls, and clear errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from zooscope.autoencoder.artefact import CONFIG, WEIGHTS, TrainedAutoencoder
from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig
from zooscope.autoencoder.training import train_on_checkpoints
from zooscope.errors import ArchitectureMismatchError, ArtefactError
from zooscope.networks.architectures import Architecture
from zooscope.networks.parameters import unstack


@pytest.fixture(scope="module")
def trained(tmp_path_factory, checkpoint_sets, digits) -> tuple[TrainedAutoencoder, Path]:
    out = tmp_path_factory.mktemp("ae")
    tc = dataclasses.replace(TrainingConfig.tiny(), epochs=1, seed=3)
    return train_on_checkpoints(*checkpoint_sets, digits, AutoencoderConfig.tiny(), tc, out), out


def test_save_and_load_round_trip(trained, checkpoint_sets) -> None:
    ae, out = trained
    loaded = TrainedAutoencoder.load(out)
    state, loaded_state = ae.model.state_dict(), loaded.model.state_dict()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    assert loaded.config == ae.config and loaded.training_config == ae.training_config
    assert loaded.architecture == ae.architecture
    assert loaded.token_layout.n_tokens == ae.token_layout.n_tokens
    assert loaded.training_log == ae.training_log
    meta = json.loads((out / CONFIG).read_text())
    assert (
        meta["seed"] == 3 and meta["code_version"] and meta["token_layout"]["width"] == ae.token_layout.width
    )
    params = checkpoint_sets[1].params
    assert torch.equal(ae.latents(params), loaded.latents(params))


def test_high_level_calls_agree_with_each_other(trained, checkpoint_sets) -> None:
    ae, _ = trained
    params = checkpoint_sets[1].params
    state_dicts = unstack(params)
    k, t, latent = len(state_dicts), ae.token_layout.n_tokens, ae.config.latent_dim
    latents = ae.latents(params)
    assert latents.shape == (k, t, latent)
    embeddings = ae.embed(state_dicts)
    assert embeddings.shape == (k, latent)
    assert torch.allclose(embeddings, latents.mean(dim=1), atol=1e-6)
    assert torch.allclose(ae.encode_tokens(ae.token_layout.tokenize(params)), latents, atol=1e-6)

    rebuilt = ae.reconstruct_params(params)
    decoded = ae.decode_latents(latents)
    assert all(torch.allclose(rebuilt[key], decoded[key], atol=1e-6) for key in rebuilt)
    assert ae.reconstruct_tokens(params).shape == (k, t, ae.token_layout.width)

    extra = [{**sd, "note.counter": torch.tensor(7)} for sd in state_dicts]
    reconstructed = ae.reconstruct(extra)
    assert len(reconstructed) == k
    assert set(reconstructed[0]) == set(extra[0])  # tensors the tokens do not carry are kept
    assert reconstructed[0]["note.counter"].item() == 7
    assert torch.allclose(reconstructed[2]["module_list.0.weight"], rebuilt["module_list.0.weight"][2])


def test_wrong_architecture_is_refused_with_its_name(trained) -> None:
    ae, _ = trained
    other = Architecture("cnn_s", 1, 28).build().state_dict()
    with pytest.raises(ArchitectureMismatchError, match="trained on cnn_digits"):
        ae.embed([other])
    with pytest.raises(ArchitectureMismatchError, match="latents of shape"):
        ae.decode_latents(torch.zeros(2, 3, 4))


def test_incomplete_or_foreign_directories_are_refused(trained, tmp_path: Path) -> None:
    ae, out = trained
    with pytest.raises(ArtefactError, match="missing"):
        TrainedAutoencoder.load(tmp_path)
    broken = tmp_path / "broken"
    ae.save(broken)
    meta = json.loads((broken / CONFIG).read_text())
    meta["autoencoder"]["d_model"] = 32
    (broken / CONFIG).write_text(json.dumps(meta))
    with pytest.raises(ArtefactError, match="does not match"):
        TrainedAutoencoder.load(broken)
    (broken / CONFIG).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ArtefactError, match="not describe"):
        TrainedAutoencoder.load(broken)
    (broken / WEIGHTS).unlink()
    with pytest.raises(ArtefactError, match="model.safetensors is missing"):
        TrainedAutoencoder.load(broken)


def test_evaluation_is_saved_beside_the_artefact(trained, tmp_path: Path) -> None:
    ae, _ = trained
    copy = tmp_path / "copy"
    ae.save(copy)
    loaded = TrainedAutoencoder.load(copy)
    assert loaded.evaluation is None
    loaded.save_evaluation({"aggregate": {"agreement": 0.9}})
    assert TrainedAutoencoder.load(copy).evaluation == {"aggregate": {"agreement": 0.9}}


def test_an_artefact_recorded_before_the_newer_keys_loads_as_it_ran(trained, tmp_path: Path) -> None:
    ae, _ = trained
    old = tmp_path / "old"
    ae.save(old)
    meta = json.loads((old / CONFIG).read_text())
    for key in ("latent_activation", "contrast_on", "encoder_final_norm"):
        del meta["autoencoder"][key]
    for key in ("statistics_weight", "statistics_weight_final", "token_normalisation", "lr_schedule"):
        del meta["training"][key]
    (old / CONFIG).write_text(json.dumps(meta))
    loaded = TrainedAutoencoder.load(old)
    # The values those artefacts ran with, not today's defaults (the cpu recipe).
    assert loaded.config == ae.config and loaded.config.latent_activation == "none"
    tc = loaded.training_config
    assert (tc.statistics_weight, tc.statistics_weight_final, tc.token_normalisation, tc.lr_schedule) == (
        0.0,
        None,
        "none",
        "none",
    )
    assert TrainingConfig().token_normalisation == "tensor"
