"""One default autoencoder per architecture: which one a job gets, the errors that say what to do,
and GET /defaults (the defaults in use, their quality, and the builds being prepared)."""

from __future__ import annotations

import torch
from service_fixtures import Api

from app.db import default_builds
from app.db import jobs as job_repo
from app.db.artefacts import add_autoencoder, add_zoo
from app.db.session import session_scope
from zooscope.networks.architectures import Architecture
from zooscope.networks.checkpoints import checkpoint_bytes

DIGITS, CNN_S = "cnn_digits-1x8x8", "cnn_s-1x28x28"
URL = "/api/v1/jobs"
EVALUATION = {
    "n": 36,
    "agreement": {"mean": 0.81},
    "agreement_high_accuracy": {"mean": 0.9, "threshold": 0.8},
    "original_accuracy": {"mean": 0.7},
    "reconstructed_accuracy": {"mean": 0.66},
}


def _upload(api: Api, architecture: Architecture, seed: int) -> str:
    torch.manual_seed(seed)
    data = checkpoint_bytes(architecture.build().state_dict(), "safetensors")
    response = api.client.post("/api/v1/checkpoints", files={"file": ("m.safetensors", data)})
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


def _autoencoder(api: Api, architecture: str, name: str, **fields: object) -> str:
    with session_scope(api.settings.database_url) as session:
        zoo = add_zoo(session, name=f"{name} zoo", path=f"/zoos/{name}")
        row = add_autoencoder(
            session, name=name, path=f"/ae/{name}", architecture_name=architecture, zoo_id=zoo.id, **fields
        )
        return row.id


def _submit(api: Api, kind: str, params: dict) -> tuple[int, dict]:
    response = api.client.post(URL, json={"kind": kind, "params": params})
    return response.status_code, response.json()


def test_a_job_gets_the_default_of_its_checkpoints_architecture(api: Api) -> None:
    digits_ae = _autoencoder(api, DIGITS, "digits")
    digits = [_upload(api, Architecture("cnn_digits", 1, 8), seed) for seed in range(2)]
    cnn_s = _upload(api, Architecture("cnn_s", 1, 28), 0)

    status, body = _submit(api, "reconstruct", {"checkpoint_ids": [cnn_s]})
    assert status == 422 and body["type"].endswith("no-default-autoencoder"), body
    assert f"no default one for {CNN_S}" in body["detail"] and "ZOOSCOPE_DEFAULT_ZOOS" in body["detail"]

    cnn_s_ae = _autoencoder(api, CNN_S, "cnn-s")  # the first of its architecture: its default
    status, body = _submit(api, "reconstruct", {"checkpoint_ids": [cnn_s]})
    assert status == 202 and body["params"]["autoencoder_id"] == cnn_s_ae
    status, body = _submit(api, "encode", {"checkpoint_ids": digits})
    assert status == 202 and body["params"]["autoencoder_id"] == digits_ae

    status, body = _submit(api, "reconstruct", {"checkpoint_ids": [*digits, cnn_s]})
    assert status == 422 and body["type"].endswith("mixed-architectures")
    assert f"2 {DIGITS}, 1 {CNN_S}" in body["detail"] and "one job per architecture" in body["detail"]

    status, body = _submit(api, "reconstruct", {"checkpoint_ids": digits, "autoencoder_id": cnn_s_ae})
    assert status == 422 and body["type"].endswith("architecture-mismatch") and DIGITS in body["detail"]

    # Without checkpoints no architecture chooses: with two defaults the job must name one.
    status, body = _submit(api, "generate", {})
    assert status == 422 and body["type"].endswith("several-default-autoencoders")
    assert digits_ae in body["detail"] and cnn_s_ae in body["detail"]

    # Making another digits autoencoder the default leaves the CNN-s one alone.
    other = _autoencoder(api, DIGITS, "other")
    assert api.client.post(f"/api/v1/autoencoders/{other}/default").json()["is_default"] is True
    listed = {
        a["id"]: (a["architecture"], a["is_default"])
        for a in api.client.get("/api/v1/autoencoders").json()["items"]
    }
    assert listed == {digits_ae: (DIGITS, False), other: (DIGITS, True), cnn_s_ae: (CNN_S, True)}


def test_defaults_say_which_is_in_use_how_good_and_what_is_prepared(api: Api) -> None:
    assert api.client.get("/api/v1/defaults").json() == {"autoencoders": [], "builds": []}
    with session_scope(api.settings.database_url) as session:
        quick_job, _ = job_repo.create_job(session, kind="train_autoencoder", params={"preset": "quick"})
        zoo_job, _ = job_repo.create_job(session, kind="build_zoo", params={"preset": "digits"})
        quick_job_id, zoo_job_id = quick_job.id, zoo_job.id
        for job_id in (quick_job_id, zoo_job_id):
            assert job_repo.claim_job(session, job_id, "w1") is not None
        job_repo.finish_job(session, quick_job_id, {})
        stages = [
            {
                "name": "quick-autoencoder",
                "kind": "train_autoencoder",
                "title": "train the quick autoencoder",
            },
            {"name": "zoo", "kind": "build_zoo", "title": "build the digits zoo"},
            {"name": "autoencoder", "kind": "train_autoencoder", "title": "train the cpu autoencoder"},
        ]
        default_builds.start_build(
            session, key="digits", architecture_name=DIGITS, title="the cpu default", stages=stages
        )
        default_builds.update_stage(session, "digits", "quick-autoencoder", job_id=quick_job_id)
        default_builds.update_stage(session, "digits", "zoo", job_id=zoo_job_id, estimate_s=50.0)
    quick = _autoencoder(api, DIGITS, "quick", evaluation=EVALUATION, source_job_id=quick_job_id)

    body = api.client.get("/api/v1/defaults").json()
    (default,) = body["autoencoders"]
    assert (default["autoencoder_id"], default["architecture"], default["preset"], default["quick"]) == (
        quick,
        DIGITS,
        "quick",
        True,
    )
    assert default["quality"] == {
        "measured_on": "the test split of quick zoo",
        "checkpoints": 36,
        "agreement": 0.81,
        "agreement_high_accuracy": 0.9,
        "high_accuracy_threshold": 0.8,
        "original_accuracy": 0.7,
        "reconstructed_accuracy": 0.66,
    }
    (build,) = body["builds"]
    assert (build["state"], build["stage"]) == ("preparing", "build the digits zoo")
    assert [(s["state"], s["eta_s"]) for s in build["stages"]] == [
        ("succeeded", 0),
        ("running", 50),
        ("waiting", None),
    ]
    assert build["eta_s"] is None  # the training's time is not known yet

    with session_scope(api.settings.database_url) as session:
        job_repo.update_progress(session, zoo_job_id, 0.5, "epoch 20/40", eta_s=30.0)
        default_builds.update_stage(session, "digits", "autoencoder", estimate_s=400.0)
    build = api.client.get("/api/v1/defaults").json()["builds"][0]
    assert build["stages"][1]["eta_s"] == 30 and build["eta_s"] == 430  # the job's own pace first

    # A job on an architecture whose default is being prepared says so.
    cnn_s = _upload(api, Architecture("cnn_s", 1, 28), 0)
    with session_scope(api.settings.database_url) as session:
        default_builds.start_build(
            session,
            key="mnist5k-cnn-s",
            architecture_name=CNN_S,
            title="the CNN-s default",
            stages=stages[1:],
        )
        default_builds.update_stage(session, "mnist5k-cnn-s", "zoo", estimate_s=100.0)
        default_builds.update_stage(session, "mnist5k-cnn-s", "autoencoder", estimate_s=200.0)
    status, problem = _submit(api, "reconstruct", {"checkpoint_ids": [cnn_s]})
    assert status == 422 and "being prepared: build the digits zoo, ready in about 300 s" in problem["detail"]
    assert "/api/v1/defaults" in problem["detail"]
