"""A zoo uploaded as an archive, through the real service: POST /zoos/archives -> an import_zoo job
that a real Celery worker (PostgreSQL, Redis) runs -> the zoo is listed with its models. Both
layouts: the public Model Zoos one (a .zip, bad models skipped) and ours (a .tar.gz)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from worker_fixtures import WorkerProcess
from worker_roundtrip import wait_for_job

from app.main import create_app
from tests.zooscope.zoo.public_zoo_layout import write_public_zoo
from worker.settings import WorkerSettings
from zooscope.networks.architectures import Architecture
from zooscope.zoo.grid import ZooConfig
from zooscope.zoo.store import build_zoo

pytestmark = pytest.mark.service
JOB_TIMEOUT_S = 180
URL = "/api/v1/zoos/archives"


@pytest.fixture
def api(service_settings: WorkerSettings) -> Iterator[TestClient]:
    with TestClient(create_app(service_settings)) as client:
        yield client


def _zip_folder(root: Path, prefix: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, f"{prefix}{path.relative_to(root)}")
    return out.getvalue()


def _tar_folder(root: Path) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        archive.add(root, arcname=".")
    return out.getvalue()


def _upload_and_wait(
    api: TestClient, data: bytes, filename: str, worker: WorkerProcess, **fields: str
) -> dict:
    response = api.post(URL, files={"file": (filename, data)}, data=fields)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["Location"].endswith(job["id"])
    final = wait_for_job(api, job["id"], JOB_TIMEOUT_S, worker.tail)
    assert final["state"] == "succeeded", final
    return api.get(f"/api/v1/jobs/{job['id']}/report").json() | {"params": job["params"]}


def test_uploaded_zoos_are_imported_by_a_real_worker(
    api: TestClient,
    service_settings: WorkerSettings,
    tmp_path: Path,
    worker_factory: Callable[[WorkerSettings], WorkerProcess],
) -> None:
    worker = worker_factory(service_settings)

    # the public layout, zipped inside a wrapping folder; its four bad models are skipped
    public = tmp_path / "public"
    good = write_public_zoo(public, Architecture("cnn_s", 1, 28))
    report = _upload_and_wait(api, _zip_folder(public, "mnist-zoo/"), "mnist-zoo.zip", worker)
    assert report["layout"] == "public"
    assert {s["model"] for s in report["skipped"]} >= {"model_nan", "model_corrupt", "model_huge"}
    zoo = api.get(f"/api/v1/zoos/{report['zoo_id']}").json()
    assert (zoo["name"], zoo["n_models"], zoo["dataset"]) == ("mnist-zoo", len(good), "mnist")
    assert report["zoo_id"] in {z["id"] for z in api.get("/api/v1/zoos").json()["items"]}
    # the unpacked upload is gone once the zoo lives in its own folder
    assert not (service_settings.archive_dir / report["params"]["archive_id"]).exists()
    assert Path(report["path"]).is_dir()

    # our own format, as a .tar.gz of the folder's contents
    ours = build_zoo(ZooConfig.tiny(epochs=1, checkpoint_epochs=(1,)), tmp_path / "ours")
    report = _upload_and_wait(api, _tar_folder(ours.path), "ours.tar.gz", worker, name="our tiny zoo")
    assert (report["layout"], report["skipped"]) == ("zooscope", [])
    zoo = api.get(f"/api/v1/zoos/{report['zoo_id']}").json()
    assert (zoo["name"], zoo["n_models"]) == ("our tiny zoo", len(ours.models))


def test_a_model_id_that_leads_outside_the_upload_fails_the_job(
    sqlite_settings: WorkerSettings, tmp_path: Path
) -> None:
    """models.json comes with an upload of our format: a model id such as "../../x" must not make
    the worker read a file outside the unpacked folder (in-process, SQLite: no Celery)."""
    import json
    import shutil

    from app.db import jobs
    from app.db.models import Job
    from app.db.session import session_scope
    from worker.runner import run_job
    from worker.tasks import BODIES

    built = build_zoo(ZooConfig.tiny(epochs=1, checkpoint_epochs=(1,)), tmp_path / "built")
    archive_id = "a" * 32
    folder = sqlite_settings.archive_dir / archive_id
    shutil.copytree(built.path, folder)
    victim = built.models[0].model_id
    evil = f"../../../{victim}"  # checkpoints/<evil>/... lands outside the upload's folder
    models = json.loads((folder / "models.json").read_text())
    models["models"][0]["model_id"] = evil
    (folder / "models.json").write_text(json.dumps(models))
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["models"][evil] = metrics["models"].pop(victim)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    outside = (folder / "checkpoints" / evil).resolve()
    outside.mkdir(parents=True)
    for path in (folder / "checkpoints" / victim).iterdir():
        shutil.copy(path, outside / path.name)
    with session_scope(sqlite_settings.database_url) as session:
        job, _ = jobs.create_job(session, kind="import_zoo", params={"archive_id": archive_id, "name": "x"})
    assert run_job(job.id, BODIES["import_zoo"], sqlite_settings) == "failed"
    with session_scope(sqlite_settings.database_url) as session:
        assert "leads outside the uploaded zoo" in session.get(Job, job.id).error
    assert not (sqlite_settings.data_dir / "zoos" / job.id).exists()
