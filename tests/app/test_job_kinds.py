"""The job-kind registry (app/job_kinds.py) is what the API, the settings and the library agree on:
the API's enum of kinds, each kind's queue, and the presets and training overrides a job may name."""

from __future__ import annotations

from typing import get_args

import pytest
from service_fixtures import Api

from app.api.schemas import JobIn
from app.job_kinds import (
    AUTOENCODER_PRESETS,
    DEFAULT_AUTOENCODER_PRESET,
    JOB_KIND_NAMES,
    JOB_KINDS,
    BuildZooParams,
    TrainAutoencoderParams,
    UnknownJobKindError,
)
from app.settings import Settings
from zooscope.autoencoder import config as autoencoder_config
from zooscope.zoo.presets import DEFAULT_ZOO_PRESET, ZOO_PRESETS

URL = "/api/v1/jobs"


def test_the_api_offers_the_registered_kinds(api: Api) -> None:
    assert get_args(JobIn.model_fields["kind"].annotation) == JOB_KIND_NAMES == tuple(JOB_KINDS)
    schema = api.client.get("/openapi.json").json()
    job_in = schema["components"]["schemas"]["JobIn"]["properties"]["kind"]
    assert tuple(job_in["enum"]) == JOB_KIND_NAMES
    listing = {p["name"]: p for p in schema["paths"][URL]["get"]["parameters"]}
    assert JOB_KIND_NAMES[0] in str(listing["kind"]["schema"])
    assert api.client.get(URL, params={"kind": "explode"}).status_code == 422


def test_every_kind_is_routed_to_its_queue() -> None:
    settings = Settings(database_url="sqlite://", broker_url="memory://", model_queue="m", zoo_queue="z")
    routed = {name: settings.queue_for(name) for name in JOB_KINDS}
    assert routed == {
        "encode": "m",
        "reconstruct": "m",
        "generate": "m",
        "evaluate": "m",
        "embedding_map": "m",
        "train_autoencoder": "m",
        "build_zoo": "z",
        "import_zoo": "z",
    }
    with pytest.raises(UnknownJobKindError, match="explode"):
        settings.queue_for("explode")


def test_the_presets_a_job_may_name_are_the_librarys() -> None:
    # The service may not import zooscope.autoencoder (the import contracts): its copy is checked here.
    assert AUTOENCODER_PRESETS == autoencoder_config.AUTOENCODER_PRESETS
    assert DEFAULT_AUTOENCODER_PRESET == autoencoder_config.DEFAULT_AUTOENCODER_PRESET
    preset = TrainAutoencoderParams.model_fields["preset"]
    assert get_args(preset.annotation) == AUTOENCODER_PRESETS and preset.default == DEFAULT_AUTOENCODER_PRESET
    preset = BuildZooParams.model_fields["preset"]
    assert get_args(preset.annotation) == ZOO_PRESETS and preset.default == DEFAULT_ZOO_PRESET


def test_train_autoencoder_overrides_are_the_librarys_names() -> None:
    """Every param that is not about the job itself reaches TrainingConfig.with_overrides under its
    own name, so none can be accepted by the API and then ignored by the worker."""
    job_fields = {"zoo_id", "name", "preset", "make_default"}
    overrides = set(TrainAutoencoderParams.model_fields) - job_fields
    assert overrides and overrides <= set(autoencoder_config.TRAINING_OVERRIDES)
    params = TrainAutoencoderParams(learning_rate=0.01, epochs=3).model_dump()
    config = autoencoder_config.TrainingConfig.cpu().with_overrides({k: params[k] for k in overrides})
    assert (config.lr, config.epochs) == (0.01, 3)
    assert config.gamma == autoencoder_config.TrainingConfig.cpu().gamma  # None: the preset's


def test_jobs_name_presets_by_the_library_vocabulary(api: Api) -> None:
    tiny = api.client.post(URL, json={"kind": "build_zoo", "params": {"preset": "tiny"}})
    assert tiny.status_code == 202 and tiny.json()["params"]["preset"] == "tiny"
    default = api.client.post(URL, json={"kind": "build_zoo", "params": {}})
    assert default.json()["params"]["preset"] == DEFAULT_ZOO_PRESET
    old_name = api.client.post(URL, json={"kind": "build_zoo", "params": {"preset": "default_digits"}})
    assert old_name.status_code == 422 and "preset" in old_name.json()["detail"]
    trained = api.client.post(URL, json={"kind": "train_autoencoder", "params": {"preset": "tiny"}})
    assert trained.status_code == 202
    huge = api.client.post(URL, json={"kind": "train_autoencoder", "params": {"preset": "huge"}})
    assert huge.status_code == 422
