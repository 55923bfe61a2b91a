"""Submitting, reading, listing and cancelling jobs; reports; idempotency."""

from __future__ import annotations

from collections.abc import Callable

from service_fixtures import Api

from app.db import jobs as job_repo
from app.db.artefacts import add_autoencoder, add_zoo
from app.db.session import session_scope

URL = "/api/v1/jobs"
DIGITS = "cnn_digits-1x8x8"  # the architecture of state_dict_bytes' checkpoints


def _upload(api: Api, data: bytes) -> str:
    response = api.client.post("/api/v1/checkpoints", files={"file": ("m.safetensors", data)})
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


def _autoencoder(api: Api, name: str = "ae", make_default: bool = True) -> str:
    with session_scope(api.settings.database_url) as session:
        zoo = add_zoo(session, name="digits", path="/zoos/digits", summary={"models": 3})
        return add_autoencoder(
            session, name=name, path="/ae", architecture_name=DIGITS, zoo_id=zoo.id, make_default=make_default
        ).id


def test_reconstruct_job_is_queued_and_reported(api: Api, state_dict_bytes: Callable[..., bytes]) -> None:
    ae_id = _autoencoder(api)
    ids = [_upload(api, state_dict_bytes(seed)) for seed in range(2)]
    response = api.client.post(URL, json={"kind": "reconstruct", "params": {"checkpoint_ids": ids}})
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert job["state"] == "queued" and job["progress"] == 0 and job["kind"] == "reconstruct"
    assert job["params"] == {"checkpoint_ids": ids, "autoencoder_id": ae_id}  # the default, filled in
    assert api.queue.sent == [("reconstruct", job["id"])]

    report = api.client.get(f"{URL}/{job['id']}/report")
    assert report.status_code == 409 and "waiting" in report.json()["detail"]

    # What the worker does, through the same repository functions.
    with session_scope(api.settings.database_url) as session:
        assert job_repo.claim_job(session, job["id"], "w1") is not None
        job_repo.update_progress(session, job["id"], 0.5, "reconstructing")
    running = api.client.get(f"{URL}/{job['id']}").json()
    assert running["state"] == "running" and running["progress"] == 0.5 and running["started_at"]
    items = [{"checkpoint_id": i, "agreement": 0.9} for i in ids]
    with session_scope(api.settings.database_url) as session:
        job_repo.finish_job(session, job["id"], {"items": items, "aggregate": {"agreement": {"mean": 0.9}}})
    done = api.client.get(f"{URL}/{job['id']}").json()
    assert (
        done["state"] == "succeeded" and done["progress"] == 1 and done["finished_at"] and done["has_report"]
    )
    body = api.client.get(f"{URL}/{job['id']}/report").json()
    assert [i["checkpoint_id"] for i in body["items"]] == ids and "aggregate" in body


def test_idempotency_key_returns_the_same_job(api: Api) -> None:
    request = {"kind": "build_zoo", "params": {"dataset": "digits", "seeds": 2}}
    first = api.client.post(URL, json=request, headers={"Idempotency-Key": "abc"})
    again = api.client.post(URL, json=request, headers={"Idempotency-Key": "abc"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.headers["location"] == first.headers["location"]
    assert len(api.queue.sent) == 1 and api.queue.sent[0][0] == "build_zoo"
    other = api.client.post(URL, json={**request, "params": {"seeds": 3}}, headers={"Idempotency-Key": "abc"})
    assert other.status_code == 422 and "different request" in other.json()["detail"]
    fresh = api.client.post(URL, json=request, headers={"Idempotency-Key": "def"})
    assert fresh.status_code == 202 and fresh.json()["id"] != first.json()["id"]


def test_params_are_validated_per_kind(api: Api, state_dict_bytes: Callable[..., bytes]) -> None:
    cases = [
        ({"kind": "explode", "params": {}}, 422, "kind"),
        ({"kind": "reconstruct", "params": {}}, 422, "checkpoint_ids"),
        ({"kind": "generate", "params": {"n_samples": 0}}, 422, "n_samples"),
        ({"kind": "generate", "params": {"bandwidth": -1}}, 422, "bandwidth"),
        ({"kind": "build_zoo", "params": {"dataset": "imagenet"}}, 422, "unknown data set"),
        ({"kind": "train_autoencoder", "params": {"gama": 0.1}}, 422, "gama"),  # typo: refused
        ({"kind": "import_zoo", "params": {}}, 422, "path"),
        ({"kind": "encode", "params": {"checkpoint_ids": ["x"]}}, 422, "no default one"),  # no autoencoder
    ]
    for body, status, words in cases:
        response = api.client.post(URL, json=body)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert words in response.json()["detail"], (body, response.json())
    assert api.queue.sent == [] and api.rows("jobs") == 0

    _autoencoder(api)
    real = _upload(api, state_dict_bytes())
    missing = api.client.post(URL, json={"kind": "encode", "params": {"checkpoint_ids": [real, "ghost"]}})
    assert (
        missing.status_code == 404
        and "ghost" in missing.json()["detail"]
        and real not in missing.json()["detail"]
    )
    bad_ae = api.client.post(URL, json={"kind": "generate", "params": {"autoencoder_id": "ghost-ae"}})
    assert bad_ae.status_code == 404 and "ghost-ae" in bad_ae.json()["detail"]
    bad_zoo = api.client.post(URL, json={"kind": "train_autoencoder", "params": {"zoo_id": "ghost-zoo"}})
    assert bad_zoo.status_code == 404 and "ghost-zoo" in bad_zoo.json()["detail"]
    assert api.queue.sent == [] and api.rows("jobs") == 0


def test_list_filters_newest_first_and_paginates(api: Api) -> None:
    ids = [
        api.client.post(URL, json={"kind": "build_zoo", "params": {"seeds": s}}).json()["id"]
        for s in (1, 2, 3)
    ]
    api.client.post(URL, json={"kind": "import_zoo", "params": {"path": "/zoos/x"}})
    listing = api.client.get(URL, params={"kind": "build_zoo"}).json()
    assert listing["total"] == 3 and [j["id"] for j in listing["items"]] == ids[::-1]
    assert len(api.client.get(URL, params={"limit": 1, "offset": 1}).json()["items"]) == 1
    assert api.client.get(URL, params={"state": "queued"}).json()["total"] == 4
    assert api.client.get(URL, params={"state": "running"}).json()["total"] == 0
    assert api.client.get(URL, params={"state": "sleeping"}).status_code == 422
    assert [q for q, _ in api.queue.sent] == ["build_zoo"] * 3 + ["import_zoo"]


def test_cancel_queued_job(api: Api) -> None:
    job = api.client.post(URL, json={"kind": "build_zoo", "params": {}}).json()
    cancelled = api.client.post(f"{URL}/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["cancel_requested"] and api.queue.revoked == [job["id"]]
    again = api.client.post(f"{URL}/{job['id']}/cancel")
    assert again.status_code == 409 and "already ended" in again.json()["detail"]
    report = api.client.get(f"{URL}/{job['id']}/report")
    assert report.status_code == 409 and "cancelled" in report.json()["detail"]
    with session_scope(api.settings.database_url) as session:  # a late worker cannot claim it
        assert job_repo.claim_job(session, job["id"], "w1") is None


def test_broker_down_is_503_and_the_job_is_not_left_queued(api: Api) -> None:
    api.queue.fail_send = True
    response = api.client.post(URL, json={"kind": "build_zoo", "params": {}})
    assert response.status_code == 503 and "broker" in response.json()["detail"]
    listing = api.client.get(URL).json()["items"]
    assert len(listing) == 1 and listing[0]["state"] == "failed"


def test_unknown_job_is_a_problem_404(api: Api) -> None:
    for method, path in [
        ("GET", f"{URL}/nope"),
        ("GET", f"{URL}/nope/report"),
        ("POST", f"{URL}/nope/cancel"),
    ]:
        response = api.client.request(method, path)
        assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"


def test_long_poll_answers_when_the_job_ends(api: Api) -> None:
    import threading
    import time

    job = api.client.post(URL, json={"kind": "build_zoo", "params": {"dataset": "digits"}}).json()

    def worker_finishes_later() -> None:
        time.sleep(0.3)
        with session_scope(api.settings.database_url) as session:
            job_repo.claim_job(session, job["id"], "w1")
            job_repo.finish_job(session, job["id"], {"zoo_id": "z"})

    thread = threading.Thread(target=worker_finishes_later)
    started = time.monotonic()
    thread.start()
    done = api.client.get(f"{URL}/{job['id']}", params={"wait": 30})
    elapsed = time.monotonic() - started
    thread.join()
    assert done.status_code == 200 and done.json()["state"] == "succeeded"
    assert 0.25 <= elapsed < 20  # it waited for the end, not for the whole 30 s


def test_long_poll_gives_the_current_state_when_the_wait_runs_out(api: Api) -> None:
    import time

    job = api.client.post(URL, json={"kind": "build_zoo", "params": {"dataset": "digits"}}).json()
    started = time.monotonic()
    still = api.client.get(f"{URL}/{job['id']}", params={"wait": 0.3})
    assert still.status_code == 200 and still.json()["state"] == "queued"
    assert time.monotonic() - started >= 0.3
    too_long = api.client.get(f"{URL}/{job['id']}", params={"wait": 3600})
    assert too_long.status_code == 422 and "wait" in too_long.text
    assert api.client.get(f"{URL}/nope", params={"wait": 5}).status_code == 404


def test_the_job_end_listener_wakes_the_long_poll(api: Api, monkeypatch) -> None:
    """With the safety look pushed out to 30 s, only the listener (NOTIFY on PostgreSQL, the
    data_version watcher on SQLite) can answer early."""
    import threading
    import time

    import app.api.job_events as job_events

    monkeypatch.setattr(job_events, "SAFETY_LOOK_S", 30.0)
    listener = api.client.app.state.job_events
    assert listener.enabled
    deadline = time.monotonic() + 10
    while not listener.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listener.connected, "the job-end listener did not come up"
    job = api.client.post(URL, json={"kind": "build_zoo", "params": {"dataset": "digits"}}).json()

    def worker_finishes_later() -> None:
        time.sleep(0.3)
        with session_scope(api.settings.database_url) as session:
            job_repo.claim_job(session, job["id"], "w1")
            job_repo.fail_job(session, job["id"], "out of memory", error_type="internal")

    thread = threading.Thread(target=worker_finishes_later)
    started = time.monotonic()
    thread.start()
    done = api.client.get(f"{URL}/{job['id']}", params={"wait": 60}).json()
    thread.join()
    assert done["state"] == "failed" and done["error"] == "out of memory"
    assert time.monotonic() - started < 10  # woken by the notification, not by the 30 s look
    # A failure of ours has its own type, on the job and on the report's problem.
    assert done["error_type"] == "internal" and done["eta_s"] is None
    problem = api.client.get(f"{URL}/{job['id']}/report")
    assert problem.status_code == 409 and problem.json()["type"].endswith("/job-internal-error")


def test_waiting_long_polls_leave_the_connection_pool_to_other_requests(api: Api, monkeypatch) -> None:
    """More long polls than the engine's pool has connections (5 + 10 overflow) wait on a queued
    job; a plain GET still answers at once, because a waiting long poll holds no connection."""
    import threading
    import time

    import app.api.job_events as job_events

    monkeypatch.setattr(job_events, "SAFETY_LOOK_S", 30.0)  # no look at the row during the wait
    job = api.client.post(URL, json={"kind": "build_zoo", "params": {"dataset": "digits"}}).json()
    wait_s, polls = 8.0, 20
    answers: list[int] = []

    def long_poll() -> None:
        answers.append(api.client.get(f"{URL}/{job['id']}", params={"wait": wait_s}).status_code)

    threads = [threading.Thread(target=long_poll) for _ in range(polls)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # every long poll has read the row and waits
    started = time.monotonic()
    plain = api.client.get(f"{URL}/{job['id']}")
    elapsed = time.monotonic() - started
    checked_out = api.client.app.state.engine.pool.checkedout()
    for thread in threads:
        thread.join()
    assert plain.status_code == 200 and plain.json()["state"] == "queued"
    # A waiting poll that held its connection would keep the GET queued in the pool until the waits end.
    assert elapsed < 2.0, f"a plain GET took {elapsed:.1f} s behind {polls} waiting long polls"
    assert checked_out == 0
    assert answers == [200] * polls
