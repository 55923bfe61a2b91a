"""Each task body against the real library, in-process on SQLite (run_job without Celery): the
inputs are read from the database and blob store, the outputs land there, the report says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from worker_fixtures import register_artefacts

from app.db import checkpoints as checkpoint_repo
from app.db import jobs
from app.db.models import Checkpoint, Job, Zoo
from app.db.session import session_scope
from app.storage import LocalBlobStore
from worker.runner import run_job
from worker.settings import WorkerSettings
from worker.tasks import BODIES
from zooscope.networks.architectures import Architecture
from zooscope.networks.checkpoints import load_checkpoint
from zooscope.zoo.store import Zoo as ZooStore


@pytest.fixture
def seeded(sqlite_settings: WorkerSettings, tiny_artefacts: dict[str, Path]) -> dict[str, object]:
    """The tiny zoo and autoencoder registered, and two of the zoo's checkpoints uploaded."""
    zoo_id, ae_id = register_artefacts(sqlite_settings.database_url, tiny_artefacts)
    store = LocalBlobStore.from_settings(sqlite_settings)
    zoo = ZooStore.open(tiny_artefacts["zoo"])
    ids = []
    for record in zoo.checkpoints(split="test")[:2]:
        from app.storage import sha256_of_file

        sha = sha256_of_file(record.path)
        tmp = sqlite_settings.data_dir / f"{sha}.tmp"
        tmp.write_bytes(record.path.read_bytes())
        store.put_file(tmp, sha)
        with session_scope(sqlite_settings.database_url) as session:
            row, _ = checkpoint_repo.add_checkpoint(
                session, sha256=sha, kind="uploaded", architecture=zoo.architecture.to_dict(),
                architecture_name=zoo.architecture.name, n_parameters=1, n_tokens=1, name=record.path.name,
                size_bytes=record.path.stat().st_size,
            )  # fmt: skip
            ids.append(row.id)
    return {"zoo_id": zoo_id, "autoencoder_id": ae_id, "checkpoint_ids": ids}


def run(settings: WorkerSettings, kind: str, params: dict) -> tuple[str, dict | None, str | None]:
    with session_scope(settings.database_url) as session:
        job, _ = jobs.create_job(session, kind=kind, params=params)
    outcome = run_job(job.id, BODIES[kind], settings)
    with session_scope(settings.database_url) as session:
        row = session.get(Job, job.id)
        return outcome, row.report, row.error


def test_encode_gives_one_embedding_per_checkpoint(sqlite_settings: WorkerSettings, seeded: dict) -> None:
    outcome, report, error = run(sqlite_settings, "encode", {"checkpoint_ids": seeded["checkpoint_ids"]})
    assert outcome == "succeeded", error
    assert [i["checkpoint_id"] for i in report["items"]] == seeded["checkpoint_ids"]
    assert all(len(i["embedding"]) == report["dim"] > 0 for i in report["items"])


def test_evaluate_and_generate_store_what_they_report(sqlite_settings: WorkerSettings, seeded: dict) -> None:
    outcome, report, error = run(sqlite_settings, "evaluate", {})
    assert outcome == "succeeded", error
    assert report["items"] and "agreement" in report["aggregate"]

    outcome, report, error = run(sqlite_settings, "generate", {"n_samples": 3, "threshold": 0.0, "seed": 1})
    assert outcome == "succeeded", error
    assert len(report["generated_ids"]) == 3 == len(report["accuracies"])
    store = LocalBlobStore.from_settings(sqlite_settings)
    with session_scope(sqlite_settings.database_url) as session:
        rows = [session.get(Checkpoint, i) for i in report["generated_ids"]]
        assert {r.kind for r in rows} == {"generated"}
        assert [r.accuracy for r in rows] == pytest.approx(report["accuracies"])
        assert all(load_checkpoint(store.open_path(r.blob_key)) for r in rows)


def test_a_missing_checkpoint_fails_the_job_with_a_message(
    sqlite_settings: WorkerSettings, seeded: dict
) -> None:
    outcome, report, error = run(sqlite_settings, "reconstruct", {"checkpoint_ids": ["no-such-id"]})
    assert (outcome, report) == ("failed", None)
    assert "no-such-id" in error


def _stored_row(settings: WorkerSettings, data: bytes, sha: str | None = None) -> str:
    """A checkpoint row for `data`, written into the blob store under `sha` (its hash unless given)."""
    import hashlib

    sha = sha or hashlib.sha256(data).hexdigest()
    store = LocalBlobStore.from_settings(settings)
    store.path_for(sha).parent.mkdir(parents=True, exist_ok=True)
    store.path_for(sha).write_bytes(data)  # as if the disk had it so, bypassing put_bytes
    with session_scope(settings.database_url) as session:
        row, _ = checkpoint_repo.add_checkpoint(
            session, sha256=sha, kind="reconstructed", architecture={}, architecture_name="cnn_digits-1x8x8",
            n_parameters=1, n_tokens=1, name="made", size_bytes=len(data),
        )  # fmt: skip
        return row.id


def test_a_blob_with_nan_or_damaged_bytes_fails_the_job_with_a_message(
    sqlite_settings: WorkerSettings, seeded: dict
) -> None:
    """Blobs are read without the upload audit, so the batch's finiteness scan and the blob's hash
    are what stand between a bad blob and a report."""
    import hashlib

    from zooscope.networks.checkpoints import checkpoint_bytes

    store = LocalBlobStore.from_settings(sqlite_settings)
    with session_scope(sqlite_settings.database_url) as session:
        good = session.get(Checkpoint, seeded["checkpoint_ids"][0])
        state_dict = load_checkpoint(store.open_path(good.blob_key))
    poisoned = {k: v.clone() for k, v in state_dict.items()}
    next(iter(poisoned.values())).view(-1)[3] = float("nan")
    nan_id = _stored_row(sqlite_settings, checkpoint_bytes(poisoned))
    outcome, report, error = run(
        sqlite_settings, "reconstruct", {"checkpoint_ids": [seeded["checkpoint_ids"][1], nan_id]}
    )
    assert (outcome, report) == ("failed", None)
    assert nan_id in error and "NaN or infinite" in error

    data = checkpoint_bytes(state_dict, metadata={"copy": "damaged"})
    damaged = data[:-4] + b"\x00\x00\x80\x7f"  # the last weight's bytes flipped on disk
    damaged_id = _stored_row(sqlite_settings, damaged, sha=hashlib.sha256(data).hexdigest())
    outcome, report, error = run(sqlite_settings, "encode", {"checkpoint_ids": [damaged_id]})
    assert (outcome, report) == ("failed", None)
    assert "damaged" in error and "sha256" in error


def test_a_rerun_reconstruct_records_its_checkpoints_once(
    sqlite_settings: WorkerSettings, seeded: dict
) -> None:
    """The second run writes the same bytes: its blobs are no longer new, so their rows are looked up
    and reused, not inserted again (a fresh run skips that lookup)."""
    from worker import records
    from worker.runner import JobContext

    store = LocalBlobStore.from_settings(sqlite_settings)
    with session_scope(sqlite_settings.database_url) as session:
        job, _ = jobs.create_job(session, kind="reconstruct", params={})
        source = session.get(Checkpoint, seeded["checkpoint_ids"][0])
        state_dict = load_checkpoint(store.open_path(source.blob_key))
        architecture = ZooStore.open(session.get(Zoo, seeded["zoo_id"]).path).architecture
    ctx = JobContext(job.id, "reconstruct", {}, None, 1, sqlite_settings, lambda *_: None)
    made = [{k: v + 0.5 for k, v in state_dict.items()}, {k: v - 0.5 for k, v in state_dict.items()}]

    def run_once() -> tuple[list[bool], list[str]]:
        blobs = records.write_blobs(ctx, made, "reconstructed", architecture)
        ids = records.store_checkpoints(
            ctx, blobs, kind="reconstructed", names=["a", "b"], architecture=architecture,
            accuracies=[None, None], extras=[{}, {}],
        )  # fmt: skip
        return [blob.stored_now for blob in blobs], ids

    first_new, first_ids = run_once()
    again_new, again_ids = run_once()
    assert first_new == [True, True] and again_new == [False, False]
    assert again_ids == first_ids and len(set(first_ids)) == 2
    with session_scope(sqlite_settings.database_url) as session:
        assert session.query(Checkpoint).filter(Checkpoint.source_job_id == job.id).count() == 2


def test_build_zoo_registers_the_zoo_once(sqlite_settings: WorkerSettings) -> None:
    params = {"preset": "tiny", "seeds": 1, "epochs": 1, "name": "smallest"}
    outcome, report, error = run(sqlite_settings, "build_zoo", params)
    assert outcome == "succeeded", error
    with session_scope(sqlite_settings.database_url) as session:
        zoo = session.get(Zoo, report["zoo_id"])
        assert (zoo.name, zoo.n_models, zoo.dataset) == ("smallest", 4, "digits")
        assert ZooStore.open(zoo.path).checkpoints()


def test_import_outside_the_roots_fails_in_the_worker_too(
    sqlite_settings: WorkerSettings, tmp_path: Path
) -> None:
    """The API checked at submission; a job row that names another folder (or a folder swapped
    for a symlink since) is refused again before anything is read."""
    root = tmp_path / "imports"
    root.mkdir()
    (root / "zoo").symlink_to(tmp_path)  # now leads outside the root
    settings = sqlite_settings.model_copy(update={"import_roots": [root]})
    outcome, report, error = run(settings, "import_zoo", {"path": str(root / "zoo")})
    assert outcome == "failed" and report is None
    assert "outside the folders imports may read" in error


def test_every_registered_kind_has_a_task_and_no_other_kind_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """app/job_kinds.py lists the kinds; worker/tasks.py has one body and one Celery task for each,
    refuses a body for a kind not listed, and refuses to import (the worker to start) with one missing."""
    from app.job_kinds import JOB_KINDS, UnknownJobKindError
    from app.queue import task_name
    from worker import tasks
    from worker.celery_app import app

    assert set(BODIES) == set(JOB_KINDS)
    assert {task_name(kind) for kind in JOB_KINDS} <= set(app.tasks)
    with pytest.raises(UnknownJobKindError, match="explode"):
        tasks.job_task("explode")
    with pytest.raises(ValueError, match="two handlers"):
        tasks.job_task("encode")(lambda ctx: {})
    monkeypatch.delitem(tasks.BODIES, "import_zoo")
    with pytest.raises(RuntimeError, match="import_zoo"):
        tasks.check_handlers()


def test_time_limits_follow_the_registered_duration() -> None:
    from app.job_kinds import JOB_KINDS, UnknownJobKindError

    settings = WorkerSettings(database_url="sqlite://", broker_url="memory://")
    for kind in JOB_KINDS.values():
        soft, _ = settings.time_limits(kind.name)
        expected = {"long": settings.long_job_time_limit_s, "short": settings.short_job_time_limit_s}
        assert soft == expected[kind.duration]
    with pytest.raises(UnknownJobKindError):
        settings.time_limits("explode")


def test_a_reconstruction_downloads_with_the_metadata_an_upload_gets(
    sqlite_settings: WorkerSettings, seeded: dict, tiny_artefacts: dict[str, Path]
) -> None:
    """Uploads and a job's outputs are stored by one path (app/ingest.py): the downloaded file of a
    reconstruction says what architecture it is, as an uploaded one does, and their rows agree."""
    import json

    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.app.service_fixtures import RecordingQueue
    from zooscope.client import API_PREFIX
    from zooscope.networks.checkpoints import read_metadata

    outcome, report, error = run(sqlite_settings, "reconstruct", {"checkpoint_ids": seeded["checkpoint_ids"]})
    assert outcome == "succeeded", error
    made_id = report["items"][0]["reconstruction_id"]
    source = ZooStore.open(tiny_artefacts["zoo"]).checkpoints(split="train")[0].path  # not seeded
    with TestClient(create_app(sqlite_settings, queue=RecordingQueue(), migrate=False)) as client:
        made = client.get(f"{API_PREFIX}/checkpoints/{made_id}").json()
        made_file = client.get(f"{API_PREFIX}/checkpoints/{made_id}/download")
        uploaded = client.post(
            f"{API_PREFIX}/checkpoints", files={"file": ("original.safetensors", source.read_bytes())}
        ).json()
        uploaded_file = client.get(f"{API_PREFIX}/checkpoints/{uploaded['id']}/download")
    made_meta, uploaded_meta = read_metadata(made_file.content), read_metadata(uploaded_file.content)
    assert uploaded["kind"] == "uploaded" and made_meta["architecture"] == uploaded_meta["architecture"]
    architecture = json.loads(made_meta["architecture"])
    assert architecture == made["architecture_config"] == uploaded["architecture_config"]
    assert (made_meta["zooscope_kind"], made_meta["zooscope_job"]) == ("reconstructed", made["source_job_id"])
    for field in ("architecture", "n_parameters", "n_tokens"):
        assert made[field] == uploaded[field], field


# ---- a zoo that mixes activations -----------------------------------------------------------------
# The population forward and a plain module may round a near-tie to another class: one test input
# of the digits test split (~270) is the most the two accuracies may differ by.
ONE_INPUT = 1 / 250


def _module_accuracy(architecture: object, state_dict: dict, dataset: object) -> float:
    """Test accuracy of one model as a plain nn.Module: the reference the reports must match."""
    import torch

    module = architecture.build().eval()  # type: ignore[attr-defined]
    module.load_state_dict(state_dict)
    with torch.no_grad():
        predicted = module(dataset.test.x).argmax(-1)  # type: ignore[attr-defined]
    return float((predicted == dataset.test.y).double().mean())  # type: ignore[attr-defined]


@pytest.fixture
def mixed(sqlite_settings: WorkerSettings, tiny_artefacts: dict[str, Path], tmp_path: Path) -> dict:
    """The tiny zoo with every other model tanh (the autoencoder's architecture stays relu, the
    commonest), registered as the autoencoder's zoo; one test checkpoint of each activation
    uploaded through the API with its activation, as a user would."""
    import json
    import shutil

    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.app.service_fixtures import RecordingQueue
    from zooscope.client import API_PREFIX

    folder = tmp_path / "mixed-zoo"
    shutil.copytree(tiny_artefacts["zoo"], folder)
    models = json.loads((folder / "models.json").read_text())
    for i, model in enumerate(models["models"]):
        model["activation"] = "tanh" if i % 2 else "relu"
    (folder / "models.json").write_text(json.dumps(models))
    zoo = ZooStore.open(folder)
    assert zoo.mixed_activations
    register_artefacts(
        sqlite_settings.database_url, {"zoo": folder, "autoencoder": tiny_artefacts["autoencoder"]}
    )
    activation_of = {m.model_id: zoo.activation_of(m) for m in zoo.models}
    first = {}
    for record in zoo.checkpoints(split="test"):
        first.setdefault(activation_of[record.model_id], record)
    assert set(first) == {"relu", "tanh"}
    uploaded = {}
    with TestClient(create_app(sqlite_settings, queue=RecordingQueue(), migrate=False)) as client:
        for activation, record in first.items():
            response = client.post(
                f"{API_PREFIX}/checkpoints",
                files={"file": (record.path.name, record.path.read_bytes())},
                data={"activation": activation},
            )
            assert response.status_code in (200, 201), response.text
            uploaded[response.json()["id"]] = activation
    return {"zoo": zoo, "uploaded": uploaded, "activation_of": activation_of}


def test_reconstructions_of_a_mixed_zoo_keep_and_are_scored_with_their_originals_activation(
    sqlite_settings: WorkerSettings, mixed: dict
) -> None:
    import json

    from zooscope.networks.checkpoints import read_metadata

    ids = list(mixed["uploaded"])
    outcome, report, error = run(sqlite_settings, "reconstruct", {"checkpoint_ids": ids})
    assert outcome == "succeeded", error
    assert report["metadata"]["architecture"]["activation"] == "relu"  # the autoencoder's
    assert report["metadata"]["activations"] == {"relu": 1, "tanh": 1}  # what each ran with
    dataset = mixed["zoo"].dataset()
    store = LocalBlobStore.from_settings(sqlite_settings)
    for item in report["items"]:
        activation = mixed["uploaded"][item["checkpoint_id"]]
        with session_scope(sqlite_settings.database_url) as session:
            original = session.get(Checkpoint, item["checkpoint_id"])
            made = session.get(Checkpoint, item["reconstruction_id"])
            blob = store.open_path(made.blob_key).read_bytes()
            original_blob = store.open_path(original.blob_key).read_bytes()
            accuracy = made.accuracy
        assert made.architecture["activation"] == original.architecture["activation"] == activation
        assert json.loads(read_metadata(blob)["architecture"])["activation"] == activation
        architecture = Architecture.from_dict(made.architecture)
        reconstruction = load_checkpoint(blob)
        expected = _module_accuracy(architecture, reconstruction, dataset)
        assert item["reconstructed_accuracy"] == pytest.approx(expected, abs=ONE_INPUT) == accuracy
        original_expected = _module_accuracy(architecture, load_checkpoint(original_blob), dataset)
        assert item["original_accuracy"] == pytest.approx(original_expected, abs=ONE_INPUT)
        if activation == "tanh":  # the autoencoder's relu would score it otherwise
            wrong = _module_accuracy(architecture.with_activation("relu"), reconstruction, dataset)
            assert abs(wrong - expected) > ONE_INPUT


def test_generated_models_of_a_mixed_zoo_run_with_their_anchors_activation(
    sqlite_settings: WorkerSettings, mixed: dict
) -> None:
    outcome, report, error = run(sqlite_settings, "generate", {"n_samples": 8, "threshold": 0.0, "seed": 3})
    assert outcome == "succeeded", error
    anchors = report["anchors"]["checkpoints"]
    expected = [mixed["activation_of"][anchors[i].split("@")[0]] for i in report["anchor_of"]]
    assert report["activations"] == expected and set(expected) == {"relu", "tanh"}
    dataset = mixed["zoo"].dataset()
    store = LocalBlobStore.from_settings(sqlite_settings)
    for checkpoint_id, activation, reported in zip(
        report["generated_ids"], expected, report["accuracies"], strict=True
    ):
        with session_scope(sqlite_settings.database_url) as session:
            made = session.get(Checkpoint, checkpoint_id)
            state_dict = load_checkpoint(store.open_path(made.blob_key))
            architecture, accuracy = Architecture.from_dict(made.architecture), made.accuracy
        assert architecture.activation == activation
        assert reported == accuracy
        assert accuracy == pytest.approx(_module_accuracy(architecture, state_dict, dataset), abs=ONE_INPUT)
