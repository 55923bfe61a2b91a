"""Conditional GETs of jobs: ETags change exactly when what a client sees changes, and a current
If-None-Match is answered 304 without a body."""

from __future__ import annotations

from service_fixtures import Api

from app.db import jobs as job_repo
from app.db.session import session_scope

URL = "/api/v1/jobs"


def _submit(api: Api, seeds: int = 1) -> str:
    response = api.client.post(URL, json={"kind": "build_zoo", "params": {"seeds": seeds}})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _revalidate(api: Api, path: str, etag: str, **params: object) -> tuple[int, str]:
    response = api.client.get(path, params=params, headers={"If-None-Match": etag})
    if response.status_code == 304:
        assert response.content == b"" and response.headers["etag"] == etag
    return response.status_code, response.headers["etag"]


def test_a_job_answers_304_until_a_visible_change(api: Api) -> None:
    job_id = _submit(api)
    first = api.client.get(f"{URL}/{job_id}")
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache" and "Authorization" in first.headers["vary"]
    assert _revalidate(api, f"{URL}/{job_id}", etag) == (304, etag)

    with session_scope(api.settings.database_url) as session:
        assert job_repo.claim_job(session, job_id, "w1") is not None
    status, claimed = _revalidate(api, f"{URL}/{job_id}", etag)
    assert status == 200 and claimed != etag

    with session_scope(api.settings.database_url) as session:
        job_repo.heartbeat(session, job_id)  # not shown by the API: the copy stays current
    assert _revalidate(api, f"{URL}/{job_id}", claimed) == (304, claimed)

    with session_scope(api.settings.database_url) as session:
        job_repo.update_progress(session, job_id, 0.5, "half")
    status, halfway = _revalidate(api, f"{URL}/{job_id}", claimed)
    assert status == 200 and halfway != claimed
    assert api.client.get(f"{URL}/{job_id}").json()["progress"] == 0.5


def test_if_none_match_lists_and_weak_tags_are_understood(api: Api) -> None:
    job_id = _submit(api)
    etag = api.client.get(f"{URL}/{job_id}").headers["etag"]
    for header in (f'"other", {etag}', f"W/{etag}", "*"):
        response = api.client.get(f"{URL}/{job_id}", headers={"If-None-Match": header})
        assert response.status_code == 304, header
    for header in ('"other"', "", "not a tag, at all", etag.strip('"')):
        response = api.client.get(f"{URL}/{job_id}", headers={"If-None-Match": header})
        assert response.status_code == 200, header


def test_a_listing_answers_304_until_a_job_in_it_changes(api: Api) -> None:
    job_id = _submit(api)
    first = api.client.get(URL, params={"limit": 50})
    etag = first.headers["etag"]
    assert first.status_code == 200 and first.headers["cache-control"] == "private, no-cache"
    assert _revalidate(api, URL, etag, limit=50) == (304, etag)

    second_id = _submit(api, seeds=2)  # a new job
    status, with_second = _revalidate(api, URL, etag, limit=50)
    assert status == 200 and with_second != etag

    with session_scope(api.settings.database_url) as session:
        job_repo.claim_job(session, job_id, "w1")
        job_repo.heartbeat(session, job_id)
    status, claimed = _revalidate(api, URL, with_second, limit=50)
    assert status == 200 and claimed != with_second  # the claim shows; the heartbeat alone would not
    assert _revalidate(api, URL, claimed, limit=50) == (304, claimed)

    with session_scope(api.settings.database_url) as session:
        job_repo.cancel_job(session, second_id)
    status, cancelled = _revalidate(api, URL, claimed, limit=50)
    assert status == 200 and cancelled != claimed
    states = {j["id"]: j["state"] for j in api.client.get(URL).json()["items"]}
    assert states == {job_id: "running", second_id: "cancelled"}


def test_a_listing_tag_belongs_to_its_page_and_filters(api: Api) -> None:
    _submit(api)
    _submit(api, seeds=2)
    tags = {
        api.client.get(URL, params=params).headers["etag"]
        for params in (
            {"limit": 50},
            {"limit": 1},
            {"limit": 1, "offset": 1},
            {"state": "queued"},
            {"kind": "build_zoo"},
        )
    }
    assert len(tags) == 5
    etag = api.client.get(URL, params={"limit": 1}).headers["etag"]
    assert _revalidate(api, URL, etag, limit=1, offset=1)[0] == 200


def test_a_listing_is_unchanged_by_jobs_it_does_not_show(api: Api) -> None:
    _submit(api)
    other = api.client.post(URL, json={"kind": "import_zoo", "params": {"path": "/zoos/x"}}).json()["id"]
    etag = api.client.get(URL, params={"kind": "build_zoo"}).headers["etag"]
    with session_scope(api.settings.database_url) as session:
        job_repo.cancel_job(session, other)
    assert _revalidate(api, URL, etag, kind="build_zoo") == (304, etag)


def test_a_listing_served_from_its_rendered_body_shows_every_change(api: Api) -> None:
    # The second client of a version gets the bytes rendered for the first; a change makes a new
    # version, rendered anew: no client ever sees a state the rows no longer have.
    job_id = _submit(api)
    first, again = (api.client.get(URL, params={"limit": 50}) for _ in range(2))
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    assert first.headers["content-type"] == "application/json"
    body = first.json()
    assert body["total"] == 1 and body["limit"] == 50 and body["offset"] == 0
    assert body["items"][0].keys() == api.client.get(f"{URL}/{job_id}").json().keys()
    assert body["items"][0]["state"] == "queued"

    with session_scope(api.settings.database_url) as session:
        job_repo.claim_job(session, job_id, "w1")
        job_repo.update_progress(session, job_id, 0.25, "a quarter")
    changed = api.client.get(URL, params={"limit": 50})
    assert changed.headers["etag"] != first.headers["etag"]
    item = changed.json()["items"][0]
    assert (item["state"], item["progress"], item["message"]) == ("running", 0.25, "a quarter")
    assert api.client.get(URL, params={"limit": 1, "offset": 1}).json()["items"] == []


def test_rendered_bodies_keep_the_most_recently_used() -> None:
    from app.api.conditional import RenderedBodies

    bodies = RenderedBodies(capacity=2)
    bodies.put('"a"', b"A")
    bodies.put('"b"', b"B")
    assert bodies.get('"a"') == b"A"  # now the most recent
    bodies.put('"c"', b"C")
    assert bodies.get('"b"') is None and bodies.get('"a"') == b"A" and bodies.get('"c"') == b"C"


def test_a_listing_body_is_the_bytes_pydantic_writes_for_the_page(api: Api) -> None:
    # The body is assembled from each row's rendered bytes (app/api/job_bodies.py): it must be
    # what rendering the whole page at once gives.
    from pydantic import TypeAdapter
    from sqlalchemy import select

    from app.api.schemas import JobOut, Page
    from app.db.models import Job

    for seeds in (1, 2, 3):
        _submit(api, seeds=seeds)
    body = api.client.get(URL, params={"limit": 2, "offset": 1}).content
    with session_scope(api.settings.database_url) as session:
        rows = session.scalars(select(Job).order_by(Job.created_at.desc(), Job.id.desc())).all()
        page = {"items": rows[1:3], "total": 3, "limit": 2, "offset": 1}
        adapter = TypeAdapter(Page[JobOut])
        assert body == adapter.dump_json(adapter.validate_python(page, from_attributes=True))
    assert api.client.get(URL, params={"limit": 2, "offset": 9}).content == (
        b'{"items":[],"total":3,"limit":2,"offset":9}'
    )


def test_a_new_version_of_a_listing_renders_only_its_changed_rows(api: Api) -> None:
    from app.api.conditional import RenderedBodies
    from app.api.job_bodies import job_etag, page_rows
    from app.db.models import Job

    ids = [_submit(api, seeds=seeds) for seeds in (1, 2, 3)]
    with session_scope(api.settings.database_url) as session:
        job_repo.claim_job(session, ids[1], "w1")  # revision 1
        rendered = RenderedBodies()
        rendered.put(job_etag(ids[0], 0), b'"kept"')  # as if rendered before, at revision 0
        keys = [(ids[2], 0), (ids[1], 0), (ids[0], 0)]  # the middle one read before its claim
        shown, bodies = page_rows(session, keys, rendered)
        assert shown == [(ids[2], 0), (ids[1], 1), (ids[0], 0)]  # rendered as it is now
        assert bodies[2] == b'"kept"'  # not loaded again
        assert [b'"state":"queued"' in bodies[0], b'"state":"running"' in bodies[1]] == [True, True]
        assert rendered.get(job_etag(ids[1], 1)) == bodies[1]

        session.delete(session.get(Job, ids[2]))
        session.flush()
        shown, bodies = page_rows(session, [(ids[2], 1), (ids[1], 1)], rendered)
        assert shown == [(ids[1], 1)] and len(bodies) == 1  # a row deleted meanwhile is left out


def test_a_job_and_the_listings_showing_it_share_its_rendered_body(api: Api) -> None:
    job_id = _submit(api)
    alone = api.client.get(f"{URL}/{job_id}")
    listed = api.client.get(URL, params={"limit": 1})
    assert alone.content in listed.content and alone.json() == listed.json()["items"][0]
    assert alone.headers["content-type"] == "application/json"


def test_a_listing_version_is_its_page_keys_in_order_and_count(api: Api) -> None:
    ids = [_submit(api, seeds=seeds) for seeds in (1, 2, 3)]
    newest_first = [(ids[2], 0), (ids[1], 0), (ids[0], 1)]
    with session_scope(api.settings.database_url) as session:
        job_repo.claim_job(session, ids[0], "w1")
        for limit, offset in ((2, 0), (2, 1), (5, 0), (3, 0), (2, 3)):
            version = job_repo.listing_version(session, None, None, None, limit, offset)
            assert version == (3, newest_first[offset : offset + limit])
        # the filters and a caller with a key (who sees the shared jobs too) are bound parameters
        assert job_repo.listing_version(session, None, "running", None, 5, 0) == (1, [(ids[0], 1)])
        assert job_repo.listing_version(session, None, "queued", "build_zoo", 5, 0)[0] == 2
        assert job_repo.listing_version(session, None, None, "import_zoo", 5, 0) == (0, [])
        assert job_repo.listing_version(session, "someone", "queued", None, 1, 1) == (2, [(ids[1], 0)])
