"""Upload, dedupe, list, download, delete."""

from __future__ import annotations

from collections.abc import Callable

import torch
from service_fixtures import Api, digits_state_dict

from zooscope.networks.checkpoints import load_checkpoint

URL = "/api/v1/checkpoints"


def upload(api: Api, data: bytes, filename: str = "model.safetensors", **fields: str):
    return api.client.post(URL, files={"file": (filename, data, "application/octet-stream")}, data=fields)


def test_upload_describes_the_checkpoint(api: Api, state_dict_bytes: Callable[..., bytes]) -> None:
    response = upload(api, state_dict_bytes(0), name="my digits")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["architecture"] == "cnn_digits-1x8x8"
    assert body["kind"] == "uploaded" and body["name"] == "my digits"
    n_params = sum(v.numel() for v in digits_state_dict(0).values())  # no BatchNorm buffers
    assert body["n_parameters"] == n_params and body["n_tokens"] > 0
    assert len(body["sha256"]) == 64 and body["created_at"]
    assert api.client.get(f"{URL}/{body['id']}").json()["id"] == body["id"]
    assert api.rows("checkpoints") == 1 and api.store.count() == 1 and api.leftover_temp_files() == []


def test_same_bytes_give_the_same_record(api: Api, state_dict_bytes: Callable[..., bytes]) -> None:
    first = upload(api, state_dict_bytes(1))
    again = upload(api, state_dict_bytes(1), filename="other-name.safetensors")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    # The same weights as a torch zip: other upload bytes, same stored file, same record.
    as_torch = upload(api, state_dict_bytes(1, "pt"), filename="model.pt")
    assert as_torch.status_code == 200 and as_torch.json()["id"] == first.json()["id"]
    assert api.rows("checkpoints") == 1 and api.store.count() == 1


def test_list_paginates_and_filters(api: Api, state_dict_bytes: Callable[..., bytes]) -> None:
    ids = [upload(api, state_dict_bytes(seed)).json()["id"] for seed in range(3)]
    page = api.client.get(URL, params={"limit": 2, "offset": 0}).json()
    assert page["total"] == 3 and len(page["items"]) == 2 and page["limit"] == 2
    rest = api.client.get(URL, params={"limit": 2, "offset": 2}).json()
    assert len(rest["items"]) == 1
    assert {i["id"] for i in page["items"] + rest["items"]} == set(ids)
    both = {"architecture": "cnn_digits-1x8x8", "kind": "uploaded"}
    assert api.client.get(URL, params=both).json()["total"] == 3
    assert api.client.get(URL, params={"architecture": "cnn_s-1x28x28"}).json()["total"] == 0
    assert api.client.get(URL, params={"kind": "generated"}).json()["total"] == 0
    bad = api.client.get(URL, params={"kind": "stolen"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"


def test_download_both_formats_reloads(api: Api, state_dict_bytes: Callable[..., bytes]) -> None:
    checkpoint_id = upload(api, state_dict_bytes(2, "pt"), filename="model.pt").json()["id"]
    original = digits_state_dict(2)
    for fmt in ("safetensors", "pt"):
        response = api.client.get(f"{URL}/{checkpoint_id}/download", params={"format": fmt})
        assert response.status_code == 200, response.text
        assert f'.{fmt}"' in response.headers["content-disposition"]
        loaded = load_checkpoint(response.content, max_bytes=10**7)
        assert set(loaded) == set(original)
        for key, value in original.items():
            assert torch.equal(loaded[key], value), key
    assert api.client.get(f"{URL}/{checkpoint_id}/download", params={"format": "zip"}).status_code == 422


def test_delete_removes_row_and_unreferenced_blob(
    api_factory: Callable[..., Api], state_dict_bytes: Callable[..., bytes]
) -> None:
    from app.db.owners import create_key
    from app.db.session import session_scope

    api = api_factory()
    with session_scope(api.settings.database_url) as session:
        _, alice = create_key(session, "alice")
        _, bob = create_key(session, "bob")
    data = state_dict_bytes(3)
    ids = []
    for key in (alice, bob):  # two owners, two records, one blob
        response = api.client.post(
            URL, files={"file": ("m.safetensors", data)}, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 201
        ids.append(response.json()["id"])
    assert ids[0] != ids[1] and api.store.count() == 1

    r = api.client.delete(f"{URL}/{ids[0]}", headers={"Authorization": f"Bearer {alice}"})
    assert r.status_code == 204
    assert api.store.count() == 1  # bob's record still uses it
    assert api.client.get(f"{URL}/{ids[0]}", headers={"Authorization": f"Bearer {alice}"}).status_code == 404
    assert api.client.delete(f"{URL}/{ids[1]}", headers={"Authorization": f"Bearer {bob}"}).status_code == 204
    assert api.store.count() == 0 and api.rows("checkpoints") == 0


def test_unknown_checkpoint_is_a_problem_404(api: Api) -> None:
    for method, path in [("GET", f"{URL}/nope"), ("GET", f"{URL}/nope/download"), ("DELETE", f"{URL}/nope")]:
        response = api.client.request(method, path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert {"type", "title", "status", "detail", "instance"} <= set(body) and "nope" in body["detail"]


def test_uploads_of_either_cnn_s_key_layout_are_one_architecture(api: Api) -> None:
    import io

    from zooscope.networks.architectures import Architecture, canonical_state_dict, initialise

    bodies = {}
    for dropout_layers in (True, False):
        arch = Architecture("cnn_s", 1, 28, dropout_layers=dropout_layers)
        module = arch.build()
        initialise(module, "kaiming_uniform", torch.Generator().manual_seed(int(dropout_layers)))
        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        response = upload(api, buffer.getvalue(), filename="model.pt", activation="tanh")
        assert response.status_code == 201, response.text
        bodies[dropout_layers] = (response.json(), canonical_state_dict(module.state_dict(), arch))
    for body, canonical in bodies.values():
        assert body["architecture"] == "cnn_s-1x28x28"  # stored in the canonical layout
        download = api.client.get(f"{URL}/{body['id']}/download", params={"format": "safetensors"})
        loaded = load_checkpoint(download.content, max_bytes=10**7)
        assert loaded.keys() == canonical.keys()
        assert all(torch.equal(loaded[key], value) for key, value in canonical.items())
