"""One API prefix: zooscope.client's API_PREFIX is where the service mounts its routes, and the
dashboard's JavaScript (which cannot import it) spells the same."""

from __future__ import annotations

import re
from pathlib import Path

from service_fixtures import Api

from zooscope.client import API_PREFIX

API_JS = Path(__file__).resolve().parents[2] / "app" / "api" / "static" / "api.js"


def test_the_dashboard_uses_the_python_prefix() -> None:
    found = re.findall(r'^export const API = "([^"]*)";$', API_JS.read_text(), flags=re.MULTILINE)
    assert found == [API_PREFIX]


def test_the_routes_and_locations_live_under_the_prefix(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert {p for p in paths if not p.startswith(API_PREFIX)} == {"/healthz", "/readyz"}
    job = api.client.post(f"{API_PREFIX}/jobs", json={"kind": "build_zoo", "params": {}})
    assert job.headers["Location"] == f"{API_PREFIX}/jobs/{job.json()['id']}"
