"""Zoos, autoencoders, health and readiness, problem documents, the dashboard, the keys CLI."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
import redis
from fastapi.testclient import TestClient
from service_fixtures import Api
from typer.testing import CliRunner

from app.cli import app as keys_app
from app.db.artefacts import add_autoencoder, add_zoo
from app.db.session import session_scope
from app.main import create_app
from app.queue import CeleryJobQueue

REDIS_TEST_DB = 15  # a database number no other user of the local Redis touches


def test_zoos_and_autoencoders(api: Api) -> None:
    with session_scope(api.settings.database_url) as session:
        zoo = add_zoo(
            session,
            name="digits",
            path="/z",
            dataset="digits",
            n_models=360,
            summary={"splits": {"train": 252}, "test_acc": {"mean": 0.76}},
        )
        first = add_autoencoder(
            session,
            name="first",
            path="/a1",
            architecture_name="cnn_digits-1x8x8",
            zoo_id=zoo.id,
            training_log={"loss": [3, 2]},
        )
        second = add_autoencoder(
            session, name="second", path="/a2", architecture_name="cnn_digits-1x8x8", zoo_id=zoo.id
        )
    c = api.client
    zoos = c.get("/api/v1/zoos").json()
    assert zoos["total"] == 1 and zoos["items"][0]["n_models"] == 360
    detail = c.get(f"/api/v1/zoos/{zoo.id}").json()
    assert detail["summary"]["test_acc"]["mean"] == 0.76 and detail["n_checkpoints"] == 0

    listing = c.get("/api/v1/autoencoders").json()
    assert listing["total"] == 2
    assert {a["id"]: a["is_default"] for a in listing["items"]} == {first.id: True, second.id: False}
    assert c.get(f"/api/v1/autoencoders/{first.id}").json()["training_log"] == {"loss": [3, 2]}
    made = c.post(f"/api/v1/autoencoders/{second.id}/default")
    assert made.status_code == 200 and made.json()["is_default"] is True
    assert c.get(f"/api/v1/autoencoders/{first.id}").json()["is_default"] is False
    for path in ("/api/v1/zoos/nope", "/api/v1/autoencoders/nope"):
        assert c.get(path).status_code == 404
    assert c.post("/api/v1/autoencoders/nope/default").status_code == 404


def test_health_and_problem_documents(api: Api) -> None:
    c = api.client
    assert c.get("/healthz").json() == {"status": "ok"}
    ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["workers"] == ["celery@test"]
    api.queue.workers = []
    not_ready = c.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.headers["content-type"] == "application/problem+json"
    assert "workers" in not_ready.json()["detail"]
    unknown = c.get("/api/v1/nothing-here")
    assert unknown.status_code == 404 and unknown.json()["detail"].startswith("no route")
    wrong_method = c.put("/api/v1/jobs")
    assert (
        wrong_method.status_code == 405 and wrong_method.headers["content-type"] == "application/problem+json"
    )
    assert c.get("/openapi.json").json()["paths"]["/api/v1/jobs"]["post"]
    assert c.get("/docs").status_code == 200


@pytest.fixture
def redis_settings(settings_factory: Callable[..., object]) -> object:
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_TEST_DB)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.skip(f"Redis is not reachable on 127.0.0.1:6379: {exc}")
    suffix = uuid.uuid4().hex[:8]
    settings = settings_factory(
        broker_url=f"redis://127.0.0.1:6379/{REDIS_TEST_DB}",
        model_queue=f"test-models-{suffix}",
        zoo_queue=f"test-zoos-{suffix}",
        readiness_timeout_s=0.3,
    )
    yield settings
    client.delete(settings.model_queue, settings.zoo_queue)
    client.close()


def test_tasks_are_sent_by_name_to_the_queue_of_their_kind(redis_settings) -> None:  # noqa: ANN001
    settings = redis_settings
    app = create_app(settings)  # the real Celery client
    with TestClient(app) as c:
        job = c.post("/api/v1/jobs", json={"kind": "build_zoo", "params": {}})
        assert job.status_code == 202
        # No worker listens: readiness says so, after the broker check passed.
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["broker"] == "ok"
        assert "no worker answered" in ready.json()["checks"]["workers"]
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_TEST_DB)
    try:
        assert client.llen(settings.zoo_queue) == 1 and client.llen(settings.model_queue) == 0
        import json

        message = json.loads(client.lindex(settings.zoo_queue, 0))
        assert message["headers"]["task"] == "zooscope.build_zoo"
        assert message["headers"]["id"] == job.json()["id"]
    finally:
        client.close()
    assert CeleryJobQueue(settings).supports_ping


def test_readiness_names_an_unreachable_broker(settings_factory: Callable[..., object]) -> None:
    settings = settings_factory(broker_url="redis://127.0.0.1:1/0", readiness_timeout_s=0.3)
    with TestClient(create_app(settings)) as c:
        response = c.get("/readyz")
    assert response.status_code == 503 and "broker" in response.json()["detail"]
    assert response.json()["checks"]["database"] == "ok"


def test_dashboard_is_served_at_root(api: Api) -> None:
    from app.main import STATIC_DIR

    if not (STATIC_DIR / "index.html").is_file():
        pytest.skip("the dashboard (app/api/static/index.html) is not written yet")
    response = api.client.get("/")
    assert response.status_code == 200 and "html" in response.headers["content-type"]


def test_keys_cli_creates_lists_and_revokes(database_url: str) -> None:
    runner = CliRunner()
    created = runner.invoke(keys_app, ["create", "--name", "carol", "--database-url", database_url])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert key.startswith("zs_")
    listing = runner.invoke(keys_app, ["list", "--database-url", database_url])
    assert "carol" in listing.stdout and key not in listing.stdout and "active" in listing.stdout
    key_id = listing.stdout.split()[0]
    revoked = runner.invoke(keys_app, ["revoke", key_id, "--database-url", database_url])
    assert revoked.exit_code == 0
    assert "revoked" in runner.invoke(keys_app, ["list", "--database-url", database_url]).stdout
    assert runner.invoke(keys_app, ["revoke", "nope", "--database-url", database_url]).exit_code == 1
