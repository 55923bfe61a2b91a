"""The dashboard against the in-memory API double (tests/client/contract_api.py): fast checks of
the page's own behaviour that do not need a worker — the API key, polling that starts and stops,
live row updates, and the report's scatter. test_dashboard.py runs the real service end to end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from app.main import STATIC_DIR
from tests.browser.conftest import CHROMIUM, chromium_page
from tests.client.contract_api import create_app
from tests.client.servers import serve_in_thread
from zooscope.client import ZooscopeClient

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (scripts/ensure-browser installs it)",
    ),
]
KEY = "dashboard-key"


@pytest.fixture(scope="module")
def double():
    app = create_app(api_key=KEY)
    # Served as app/main.py serves it: files under /static, index.html at /.
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_api_route("/", lambda: FileResponse(STATIC_DIR / "index.html"), include_in_schema=False)
    return app


@pytest.fixture(scope="module")
def url(double) -> Iterator[str]:
    with serve_in_thread(double) as url:
        yield url


@pytest.fixture
def page(url: str) -> Iterator:
    errors: list[str] = []
    with chromium_page(errors) as page:
        yield page
        assert errors == []


def test_key_polling_live_rows_and_report(url: str, double, page) -> None:
    with ZooscopeClient(url, key=KEY) as client:
        ids = [
            str(client.upload(bytes([83, 65, 70, 69, i]), name=f"m{i}.safetensors")["id"]) for i in range(3)
        ]

        page.goto(f"{url}/#/jobs")
        page.wait_for_selector("#flash:not([hidden])")
        assert "API key" in page.inner_text("#flash")  # 401 until the key is set

        page.fill("#api-key", KEY)
        page.dispatch_event("#api-key", "change")
        page.wait_for_selector("#job-form input[name=checkpoint]")
        assert page.evaluate("localStorage.getItem('zooscope.apiKey')") == KEY
        page.wait_for_function("document.body.dataset.polling === 'false'")  # no jobs: no polling

        for cid in ids:
            page.check(f"#job-form input[name=checkpoint][value='{cid}']")
        page.click("#job-form button[type=submit]")
        row = page.wait_for_selector("tr[data-job-id][data-state=queued]")
        job_id = row.get_attribute("data-job-id")
        posted = [h for h in double.state.seen_headers if "idempotency-key" in h]
        assert posted and posted[-1]["authorization"] == f"Bearer {KEY}"
        assert page.evaluate("document.body.dataset.polling") == "true"

        page.evaluate("window.__notReloaded = true")
        while client.get_job(job_id)["state"] != "succeeded":  # the double moves a step per GET
            pass
    page.wait_for_selector(f"tr[data-job-id='{job_id}'][data-state=succeeded]", timeout=5_000)
    page.wait_for_function("document.body.dataset.polling === 'false'", timeout=5_000)
    assert page.evaluate("window.__notReloaded") is True

    page.click(f"tr[data-job-id='{job_id}'] a.report-link")
    page.wait_for_selector("#report-items tbody tr")
    assert page.evaluate("window.__zooscopeCharts['scatter-plot'].data.datasets[0].data.length") == len(ids)
    assert page.inner_text("#fig-agreement .value") == "0.850"


def test_leaving_the_jobs_page_stops_polling(url: str, page) -> None:
    with ZooscopeClient(url, key=KEY) as client:
        client.submit("reconstruct", {"checkpoint_ids": ["1"], "outcome": "never"})
    page.goto(f"{url}/#/jobs")
    page.evaluate(f"localStorage.setItem('zooscope.apiKey', '{KEY}')")
    page.reload()
    page.wait_for_function("document.body.dataset.polling === 'true'")
    page.click("nav a[data-page=checkpoints]")
    page.wait_for_selector("#checkpoints-table")
    assert page.evaluate("document.body.dataset.polling") == "false"


def test_the_jobs_page_revalidates_its_polls(url: str, double, page) -> None:
    # The service marks listings `no-cache` with an ETag: the browser's own cache must send
    # If-None-Match and hand the page its copy on a 304 (the dashboard's fetch must not bypass it).
    with ZooscopeClient(url, key=KEY) as client:
        job_id = client.submit("reconstruct", {"checkpoint_ids": ["1"], "outcome": "never"})["id"]
    page.goto(f"{url}/#/jobs")
    page.evaluate(f"localStorage.setItem('zooscope.apiKey', '{KEY}')")
    page.reload()
    page.wait_for_function("document.body.dataset.polling === 'true'")
    before = double.state.not_modified
    page.wait_for_timeout(3_500)  # three polls or more, once a second
    assert double.state.not_modified - before >= 2
    listings = [h for h in double.state.seen_headers if "if-none-match" in h]
    assert listings and listings[-1]["authorization"] == f"Bearer {KEY}"
    assert page.is_visible(f"tr[data-job-id='{job_id}']")
    assert page.evaluate("document.body.dataset.polling") == "true"
