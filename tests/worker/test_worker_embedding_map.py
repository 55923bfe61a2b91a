"""The embedding map through the service: an embedding_map job submitted to the API, run by the
worker on the tiny zoo, read back through the API; then reconstruct and generate jobs place their
models on that map. In-process on SQLite and PostgreSQL (the API's listing filters job params,
JSON, on both), and once in production shape with a real Celery worker over Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from sklearn.metrics import r2_score
from worker_fixtures import WorkerProcess, register_artefacts
from worker_roundtrip import submit, upload_zoo_checkpoints, wait_for_job

from app.main import create_app
from tests.app.service_fixtures import RecordingQueue
from worker.runner import run_job
from worker.settings import WorkerSettings
from worker.tasks import BODIES
from zooscope.analysis.embedding_map import Projection
from zooscope.analysis.probing import embeddings
from zooscope.autoencoder.artefact import TrainedAutoencoder
from zooscope.zoo.store import Zoo

API = "/api/v1"
JOB_TIMEOUT_S = 180  # generous: the machine's two cores are shared


@pytest.fixture(params=["sqlite_settings", pytest.param("service_settings", marks=pytest.mark.service)])
def settings(request: pytest.FixtureRequest) -> WorkerSettings:
    return request.getfixturevalue(request.param)


@pytest.fixture
def api(settings: WorkerSettings, tiny_artefacts: dict[str, Path]) -> Iterator[tuple[TestClient, str]]:
    """The API on the worker's database, the tiny zoo and autoencoder registered (the autoencoder
    is the default); jobs are run in this process by `run_submitted`."""
    _, ae_id = register_artefacts(settings.database_url, tiny_artefacts)
    with TestClient(create_app(settings, queue=RecordingQueue())) as client:
        yield client, ae_id


def run_submitted(client: TestClient, settings: WorkerSettings, kind: str, params: dict[str, Any]) -> dict:
    job_id = submit(client, kind, params)
    assert run_job(job_id, BODIES[kind], settings) == "succeeded", client.get(f"{API}/jobs/{job_id}").json()
    return {"id": job_id, **client.get(f"{API}/jobs/{job_id}/report").json()}


def xy(point: dict[str, Any]) -> tuple[float, float]:
    return point["x"], point["y"]


def test_the_map_job_maps_the_zoo_and_later_jobs_land_on_it(
    api: tuple[TestClient, str], settings: WorkerSettings, tiny_artefacts: dict[str, Path]
) -> None:
    client, ae_id = api
    zoo = Zoo.open(tiny_artefacts["zoo"])
    run_submitted(client, settings, "embedding_map", {})  # the default autoencoder

    listed = client.get(f"{API}/embedding-maps", params={"autoencoder_id": ae_id}).json()
    assert listed["total"] == 1
    map_id = listed["items"][0]["id"]
    whole = client.get(f"{API}/embedding-maps/{map_id}").json()
    assert whole["autoencoder_id"] == ae_id and whole["points"]["total"] == len(zoo.checkpoints())
    points = {p["checkpoint"]: p for p in whole["points"]["items"]}
    assert sorted(points) == sorted(f"{r.model_id}@{r.epoch}" for r in zoo.checkpoints())
    ratio = whole["projection"]["explained_variance_ratio"]
    assert 1 >= ratio[0] >= ratio[1] > 0

    # The stored projection places the zoo's checkpoints where the map shows them.
    ae = TrainedAutoencoder.load(tiny_artefacts["autoencoder"])
    records = zoo.checkpoints()
    placed = Projection.from_dict(whole["projection"]).project(
        embeddings(ae, zoo.load_checkpoints(records).params)
    )
    shown = torch.tensor([xy(points[f"{r.model_id}@{r.epoch}"]) for r in records], dtype=torch.float64)
    assert torch.allclose(placed, shown, atol=1e-5)

    prediction = client.get(f"{API}/embedding-maps/{map_id}/property-prediction").json()
    items = prediction["items"]["items"]
    assert [i["checkpoint"] for i in items] == [
        f"{r.model_id}@{r.epoch}" for r in zoo.checkpoints(split="test")
    ]
    for kind in ("embedding", "weight_statistics"):
        r2 = r2_score([i["true"] for i in items], [i[kind] for i in items])
        assert prediction["probes"][kind]["r2_test"] == pytest.approx(r2)

    # Uploaded copies of zoo checkpoints: their originals are embedded where the map has them.
    zoo_ids = [f"{r.model_id}@{r.epoch}" for r in zoo.checkpoints(split="test")[:2]]
    uploaded = upload_zoo_checkpoints(client, tiny_artefacts["zoo"], 2)
    report = run_submitted(client, settings, "reconstruct", {"checkpoint_ids": uploaded})
    on_map = report["embedding_map"]
    assert on_map["map_id"] == map_id and "embedding_map" in report["timings_s"]
    assert [i["checkpoint_id"] for i in on_map["items"]] == uploaded
    for item, name in zip(on_map["items"], zoo_ids, strict=True):
        assert xy(item["original"]) == pytest.approx(xy(points[name]), abs=1e-5)
        assert item["reconstruction"] != item["original"]

    report = run_submitted(client, settings, "generate", {"n_samples": 3, "threshold": 0.0, "seed": 1})
    on_map = report["embedding_map"]
    assert on_map["map_id"] == map_id
    assert [a["checkpoint"] for a in on_map["anchors"]] == report["anchors"]["checkpoints"]
    for anchor in on_map["anchors"]:  # anchors are zoo checkpoints, already on the map
        assert xy(anchor) == pytest.approx(xy(points[anchor["checkpoint"]]), abs=1e-5)
    assert [g["checkpoint_id"] for g in on_map["generated"]] == report["generated_ids"]
    assert [g["anchor"] for g in on_map["generated"]] == report["anchor_of"]


def test_before_its_autoencoder_has_a_map_a_reconstruction_is_not_placed(
    api: tuple[TestClient, str], settings: WorkerSettings, tiny_artefacts: dict[str, Path]
) -> None:
    client, ae_id = api
    assert client.get(f"{API}/embedding-maps", params={"autoencoder_id": ae_id}).json()["total"] == 0
    uploaded = upload_zoo_checkpoints(client, tiny_artefacts["zoo"], 1)
    report = run_submitted(client, settings, "reconstruct", {"checkpoint_ids": uploaded})
    assert "embedding_map" not in report and "embedding_map" not in report["timings_s"]


@pytest.mark.service
def test_a_celery_worker_runs_the_map_job_submitted_to_the_api(
    service_settings: WorkerSettings,
    tiny_artefacts: dict[str, Path],
    worker_factory: Callable[[WorkerSettings], WorkerProcess],
) -> None:
    _, ae_id = register_artefacts(service_settings.database_url, tiny_artefacts)
    worker_factory(service_settings)
    with TestClient(create_app(service_settings)) as client:
        job_id = submit(client, "embedding_map", {"autoencoder_id": ae_id})
        assert wait_for_job(client, job_id, JOB_TIMEOUT_S)["state"] == "succeeded"
        latest = client.get(f"{API}/embedding-maps", params={"autoencoder_id": ae_id, "limit": 1}).json()
        assert latest["items"][0]["id"] == job_id
        page = client.get(f"{API}/embedding-maps/{job_id}", params={"limit": 5}).json()["points"]
        assert len(page["items"]) == 5 and page["total"] == len(Zoo.open(tiny_artefacts["zoo"]).checkpoints())
