"""A zoo uploaded as an archive, through the real service: POST /zoos/archives -> an import_zoo job
that a real Celery worker (PostgreSQL, Redis) runs -> the zoo is listed with its models. Both
layouts: the public Model Zoos one (a .zip, bad models skipped) and ours (a .tar.gz). The
unpacked upload goes when its job ends, succeeded or failed, and the sweep removes what a job
did not (in-process, SQLite)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from worker_fixtures import WorkerProcess, wait_for
from worker_roundtrip import wait_for_job

from app.main import create_app
from tests.zooscope.zoo.public_zoo_layout import write_model, write_public_zoo
from worker.settings import WorkerSettings
from zooscope.networks.architectures import Architecture
from zooscope.zoo.grid import ZooConfig
from zooscope.zoo.store import Zoo, build_zoo

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
    final = _upload_and_end(api, data, filename, worker, **fields)
    assert final["state"] == "succeeded", final
    return api.get(f"/api/v1/jobs/{final['id']}/report").json() | {"params": final["params"]}


def _upload_and_end(
    api: TestClient, data: bytes, filename: str, worker: WorkerProcess, **fields: str
) -> dict:
    """The import job of an upload, once it has ended."""
    response = api.post(URL, files={"file": (filename, data)}, data=fields)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["Location"].endswith(job["id"])
    return wait_for_job(api, job["id"], JOB_TIMEOUT_S, worker.tail)


def _wait_until_removed(folder: Path, worker: WorkerProcess) -> None:
    """The worker removes an upload's folder right after recording the job's end."""
    wait_for(lambda: not folder.exists(), 10, f"{folder} to be removed", worker.tail)


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
    # the unpacked upload is gone once the zoo lives in its own folder, which has all it needs
    _wait_until_removed(service_settings.archive_dir / report["params"]["archive_id"], worker)
    assert Path(report["path"]).is_dir()
    imported = Zoo.open(report["path"])
    checkpoints = imported.load_checkpoints(imported.checkpoints())
    assert len(checkpoints.records) == sum(len(epochs) for epochs in good.values())

    # our own format, as a .tar.gz of the folder's contents
    ours = build_zoo(ZooConfig.tiny(epochs=1, checkpoint_epochs=(1,)), tmp_path / "ours")
    report = _upload_and_wait(api, _tar_folder(ours.path), "ours.tar.gz", worker, name="our tiny zoo")
    assert (report["layout"], report["skipped"]) == ("zooscope", [])
    zoo = api.get(f"/api/v1/zoos/{report['zoo_id']}").json()
    assert (zoo["name"], zoo["n_models"]) == ("our tiny zoo", len(ours.models))
    _wait_until_removed(service_settings.archive_dir / report["params"]["archive_id"], worker)
    copied = Zoo.open(report["path"])
    assert len(copied.load_checkpoints(copied.checkpoints()).records) == len(ours.checkpoints())


def test_a_failed_import_leaves_no_unpacked_upload(
    api: TestClient,
    service_settings: WorkerSettings,
    tmp_path: Path,
    worker_factory: Callable[[WorkerSettings], WorkerProcess],
) -> None:
    """An archive that passes the upload's checks but holds no importable model: the job fails
    with the reasons, and its unpacked folder does not stay behind."""
    worker = worker_factory(service_settings)
    bad = tmp_path / "bad"
    arch = Architecture("cnn_s", 1, 28)
    write_model(bad, "model_nan", arch, 4, poison="nan")
    write_model(bad, "model_huge", arch, 6, poison="huge")
    final = _upload_and_end(api, _zip_folder(bad, ""), "bad.zip", worker)
    assert final["state"] == "failed", final
    assert "no model" in final["error"] and "model_nan" in final["error"]
    _wait_until_removed(service_settings.archive_dir / final["params"]["archive_id"], worker)
    assert not (service_settings.data_dir / "zoos" / final["id"]).exists()


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


def test_the_sweep_removes_uploads_no_job_will_read(sqlite_settings: WorkerSettings) -> None:
    """What a job did not remove (its worker died for good; cancelled before a worker claimed it;
    the API died before queuing one): ended jobs' folders go at once, job-less ones after
    ZOOSCOPE_ORPHAN_ARCHIVE_AFTER_S; the folders of queued and running jobs stay."""
    from app.db import jobs
    from app.db.session import session_scope
    from worker.sweep import remove_unread_archives

    root = sqlite_settings.archive_dir
    folders = {}
    for i, name in enumerate(("failed", "cancelled", "queued", "running", "no job", "staging")):
        archive_id = f"{i:032x}"
        folders[name] = root / (f".{archive_id}.partial" if name == "staging" else archive_id)
        (folders[name] / "model_a").mkdir(parents=True)
        (folders[name] / "model_a" / "params.json").write_text("{}")
        if name in ("no job", "staging"):
            continue
        with session_scope(sqlite_settings.database_url) as session:
            params = {"archive_id": archive_id, "name": name}
            job, _ = jobs.create_job(session, kind="import_zoo", params=params)
            if name == "cancelled":
                jobs.cancel_job(session, job.id)
            if name in ("failed", "running"):
                jobs.claim_job(session, job.id, "host:1")
            if name == "failed":
                jobs.fail_job(session, job.id, "no model could be imported", error_type="input")
    (root / "notes.txt").write_text("not an upload")

    def left() -> set[str]:
        return {name for name, path in folders.items() if path.exists()}

    assert sorted(remove_unread_archives(sqlite_settings)) == sorted(
        [folders["failed"], folders["cancelled"]]
    )
    assert left() == {"queued", "running", "no job", "staging"}

    later = sqlite_settings.model_copy(update={"orphan_archive_after_s": 1e-6})
    assert sorted(remove_unread_archives(later)) == sorted([folders["no job"], folders["staging"]])
    assert left() == {"queued", "running"}
    assert (root / "notes.txt").is_file()
