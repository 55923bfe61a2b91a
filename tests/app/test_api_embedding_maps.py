"""The embedding-map routes read the stored reports of embedding_map jobs, on SQLite and
PostgreSQL: the listing per autoencoder (newest first), points and predictions a page at a time
within their bounds, and problems for what is not a map, not finished, or has no prediction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service_fixtures import Api

from app.api.routes.embedding_maps import MAX_POINTS_PAGE
from app.db import artefacts
from app.db import jobs as job_repo
from app.db.owners import create_key
from app.db.session import session_scope

URL = "/api/v1/embedding-maps"
ARCHITECTURE = "cnn_digits-1x8x8"


def _report(n_points: int, prediction: bool = True) -> dict[str, Any]:
    points = [
        {"checkpoint": f"m{i}@1", "model_id": f"m{i}", "epoch": 1, "split": "test", "init": "kaiming_uniform",
         "lr": 0.01, "wd": 0.0, "seed": i, "test_acc": i / n_points, "x": float(i), "y": -float(i)}
        for i in range(n_points)
    ]  # fmt: skip
    return {
        "version": 1,
        "zoo_id": "zoo-1",
        "metadata": {"n_checkpoints": n_points},
        "projection": {
            "method": "pca",
            "mean": [0.0, 0.0, 0.0],
            "components": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
            "explained_variance": [2.0, 1.0],
            "explained_variance_ratio": [0.5, 0.25],
            "total_variance": 4.0,
        },  # fmt: skip
        "points": points,
        "prediction": {
            "property": "test_acc",
            "split": "test",
            "probes": {
                "embedding": {"alpha": 1.0, "r2_val": 0.5, "r2_test": 0.75},
                "weight_statistics": {"alpha": 10.0, "r2_val": 0.25, "r2_test": None},
            },
            "items": [
                {
                    "checkpoint": p["checkpoint"],
                    "true": p["test_acc"],
                    "embedding": 0.5,
                    "weight_statistics": 0.25,
                }
                for p in points
            ],
        }
        if prediction
        else None,
    }


def _job(api: Api, kind: str, params: dict[str, Any], report: dict[str, Any] | None) -> str:
    """A job row of `kind`; with a report, succeeded (as the worker leaves it), else queued."""
    with session_scope(api.settings.database_url) as session:
        job, _ = job_repo.create_job(session, kind=kind, params=params)
        if report is not None:
            job_repo.claim_job(session, job.id, "test-worker")
            assert job_repo.finish_job(session, job.id, report)
        return job.id


def _autoencoder(api: Api) -> str:
    with session_scope(api.settings.database_url) as session:
        return artefacts.add_autoencoder(
            session, name="ae", path="/nowhere", architecture_name="cnn_digits-1x8x8"
        ).id


def test_maps_are_listed_per_autoencoder_newest_first_and_read_a_page_at_a_time(api: Api) -> None:
    ae, other = _autoencoder(api), _autoencoder(api)
    older = _job(api, "embedding_map", {"autoencoder_id": ae}, _report(5))
    newer = _job(api, "embedding_map", {"autoencoder_id": ae}, _report(7))
    theirs = _job(api, "embedding_map", {"autoencoder_id": other}, _report(3))
    _job(api, "embedding_map", {"autoencoder_id": ae}, None)  # still queued: not a map yet
    _job(api, "evaluate", {"autoencoder_id": ae}, {"items": []})  # another kind's report

    listed = api.client.get(URL, params={"autoencoder_id": ae}).json()
    assert [m["id"] for m in listed["items"]] == [newer, older] and listed["total"] == 2
    assert {m["autoencoder_id"] for m in listed["items"]} == {ae}
    assert {m["id"] for m in api.client.get(URL).json()["items"]} == {older, newer, theirs}

    whole = api.client.get(f"{URL}/{newer}").json()
    assert (whole["id"], whole["autoencoder_id"], whole["zoo_id"]) == (newer, ae, "zoo-1")
    assert whole["projection"]["explained_variance_ratio"] == [0.5, 0.25]
    assert whole["points"]["total"] == 7 and len(whole["points"]["items"]) == 7
    page = api.client.get(f"{URL}/{newer}", params={"limit": 3, "offset": 5}).json()["points"]
    assert [p["checkpoint"] for p in page["items"]] == ["m5@1", "m6@1"]
    assert (page["total"], page["limit"], page["offset"]) == (7, 3, 5)

    prediction = api.client.get(f"{URL}/{newer}/property-prediction", params={"limit": 2}).json()
    assert (prediction["map_id"], prediction["property"], prediction["split"]) == (newer, "test_acc", "test")
    assert prediction["probes"]["embedding"]["r2_test"] == 0.75
    assert prediction["probes"]["weight_statistics"]["r2_test"] is None
    assert prediction["items"]["total"] == 7 and len(prediction["items"]["items"]) == 2


def test_what_is_not_a_finished_map_is_a_problem(api: Api) -> None:
    ae = _autoencoder(api)
    queued = _job(api, "embedding_map", {"autoencoder_id": ae}, None)
    evaluate = _job(api, "evaluate", {"autoencoder_id": ae}, {"items": []})
    unpredicted = _job(api, "embedding_map", {"autoencoder_id": ae}, _report(2, prediction=False))

    for missing in (evaluate, "no-such-map"):
        response = api.client.get(f"{URL}/{missing}")
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert "no embedding map" in response.json()["detail"]
    response = api.client.get(f"{URL}/{queued}")
    assert response.status_code == 409 and response.json()["state"] == "queued"
    assert api.client.get(f"{URL}/{queued}/property-prediction").status_code == 409

    assert api.client.get(f"{URL}/{unpredicted}").status_code == 200
    response = api.client.get(f"{URL}/{unpredicted}/property-prediction")
    assert response.status_code == 404 and response.json()["type"].endswith("no-property-prediction")

    for params in ({"limit": MAX_POINTS_PAGE + 1}, {"limit": 0}, {"offset": -1}):
        assert api.client.get(f"{URL}/{unpredicted}", params=params).status_code == 422
    assert api.client.get(URL, params={"limit": 501}).status_code == 422


def test_the_routes_are_in_the_openapi_document_with_their_problems(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    for path in (URL, f"{URL}/{{map_id}}", f"{URL}/{{map_id}}/property-prediction"):
        operation = paths[path]["get"]
        assert {"404", "422"} <= set(operation["responses"]), path
        assert "application/problem+json" in operation["responses"]["404"]["content"]
    assert "409" in paths[f"{URL}/{{map_id}}"]["get"]["responses"]
    points = {p["name"]: p["schema"] for p in paths[f"{URL}/{{map_id}}"]["get"]["parameters"]}
    assert points["limit"]["maximum"] == MAX_POINTS_PAGE


def test_a_keys_map_is_its_own(api_factory: Callable[..., Api]) -> None:
    """Maps are jobs: a key lists and reads its own and the shared ones, another key's not at all."""
    api = api_factory(auth_required=True)
    with session_scope(api.settings.database_url) as session:
        alice_row, alice = create_key(session, "alice")
        _, bob = create_key(session, "bob")
        ae = artefacts.add_autoencoder(
            session, name="shared", path="/nowhere", architecture_name=ARCHITECTURE
        ).id
        job, _ = job_repo.create_job(
            session, kind="embedding_map", params={"autoencoder_id": ae}, owner_id=alice_row.owner_id
        )
        job_repo.claim_job(session, job.id, "test-worker")
        assert job_repo.finish_job(session, job.id, _report(3))
    shared = _job(api, "embedding_map", {"autoencoder_id": ae}, _report(2))

    def listed(key: str) -> list[str]:
        page = api.client.get(URL, params={"autoencoder_id": ae}, headers={"Authorization": f"Bearer {key}"})
        return [m["id"] for m in page.json()["items"]]

    assert listed(alice) == [shared, job.id] and listed(bob) == [shared]  # newest first
    for path in (f"{URL}/{job.id}", f"{URL}/{job.id}/property-prediction"):
        assert api.client.get(path, headers={"Authorization": f"Bearer {alice}"}).status_code == 200
        assert api.client.get(path, headers={"Authorization": f"Bearer {bob}"}).status_code == 404
