"""With ZOOSCOPE_AUTH_REQUIRED: keys are required, and a key sees its own rows plus shared ones."""

from __future__ import annotations

from collections.abc import Callable

from service_fixtures import Api

from app.db.artefacts import add_autoencoder
from app.db.owners import create_key, revoke_key
from app.db.session import session_scope


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_scope_every_resource(
    api_factory: Callable[..., Api], state_dict_bytes: Callable[..., bytes]
) -> None:
    api = api_factory(auth_required=True)
    with session_scope(api.settings.database_url) as session:
        alice_row, alice = create_key(session, "alice")
        _, bob = create_key(session, "bob")
        shared_ae = add_autoencoder(
            session, name="shared", path="/ae", architecture_name="cnn_digits-1x8x8", make_default=True
        ).id
    c = api.client

    missing = c.get("/api/v1/checkpoints")
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert (
        missing.headers["content-type"] == "application/problem+json"
        and "keys create" in missing.json()["detail"]
    )
    assert c.get("/api/v1/jobs", headers=_bearer("zs_wrong")).status_code == 401
    assert c.get("/api/v1/jobs", headers={"Authorization": "Basic abc"}).status_code == 401
    assert c.get("/healthz").status_code == 200  # probes need no key

    upload = c.post(
        "/api/v1/checkpoints", files={"file": ("m.safetensors", state_dict_bytes())}, headers=_bearer(alice)
    )
    assert upload.status_code == 201
    checkpoint_id = upload.json()["id"]
    job = c.post(
        "/api/v1/jobs",
        json={"kind": "encode", "params": {"checkpoint_ids": [checkpoint_id]}},
        headers=_bearer(alice),
    )
    assert job.status_code == 202 and job.json()["params"]["autoencoder_id"] == shared_ae
    job_id = job.json()["id"]

    # Alice sees hers; Bob gets 404 for each, as if they did not exist.
    assert c.get(f"/api/v1/checkpoints/{checkpoint_id}", headers=_bearer(alice)).status_code == 200
    for path in (
        f"/api/v1/checkpoints/{checkpoint_id}",
        f"/api/v1/checkpoints/{checkpoint_id}/download",
        f"/api/v1/jobs/{job_id}",
        f"/api/v1/jobs/{job_id}/report",
    ):
        assert c.get(path, headers=_bearer(bob)).status_code == 404, path
    assert c.delete(f"/api/v1/checkpoints/{checkpoint_id}", headers=_bearer(bob)).status_code == 404
    assert c.post(f"/api/v1/jobs/{job_id}/cancel", headers=_bearer(bob)).status_code == 404
    assert c.get("/api/v1/checkpoints", headers=_bearer(bob)).json()["total"] == 0
    assert c.get("/api/v1/jobs", headers=_bearer(bob)).json()["total"] == 0
    # Bob cannot use Alice's checkpoint in a job either.
    stolen = c.post(
        "/api/v1/jobs",
        json={"kind": "encode", "params": {"checkpoint_ids": [checkpoint_id]}},
        headers=_bearer(bob),
    )
    assert stolen.status_code == 404
    # Shared rows are visible to both.
    assert c.get(f"/api/v1/autoencoders/{shared_ae}", headers=_bearer(bob)).status_code == 200
    # The same idempotency key from two owners: two jobs.
    a = c.post(
        "/api/v1/jobs",
        json={"kind": "build_zoo", "params": {}},
        headers={**_bearer(alice), "Idempotency-Key": "k"},
    )
    b = c.post(
        "/api/v1/jobs",
        json={"kind": "build_zoo", "params": {}},
        headers={**_bearer(bob), "Idempotency-Key": "k"},
    )
    assert a.status_code == b.status_code == 202 and a.json()["id"] != b.json()["id"]

    with session_scope(api.settings.database_url) as session:
        revoke_key(session, alice_row.id)
    assert c.get("/api/v1/jobs", headers=_bearer(alice)).status_code == 401


def test_without_auth_requests_share_everything(api: Api, state_dict_bytes: Callable[..., bytes]) -> None:
    response = api.client.post("/api/v1/checkpoints", files={"file": ("m.safetensors", state_dict_bytes())})
    assert response.status_code == 201 and response.json()["shared"] is True
