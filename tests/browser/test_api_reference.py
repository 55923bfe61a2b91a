"""The API reference (/docs, Swagger UI) renders in headless Chromium with every request off this
machine blocked: its scripts and styles come from the service itself. (ReDoc is not served: its
page fetches a logo from a CDN.)"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.service_process import Service, running_service

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
LOCAL_HOSTS = ("127.0.0.1", "localhost")


@pytest.fixture(scope="module")
def bare_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp("zooscope-docs")
    with running_service(data_dir, ARTIFACTS / "api-reference.log", bootstrap_models=False) as svc:
        yield svc


@pytest.fixture
def offline_page(bare_service: Service) -> Iterator[tuple]:
    """A page whose every request to another host is aborted and recorded."""
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []

    def only_local(route) -> None:  # noqa: ANN001 - playwright's Route
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_local)
            yield page, blocked
        finally:
            browser.close()


def test_swagger_ui_renders_with_the_network_blocked(bare_service: Service, offline_page: tuple) -> None:
    page, blocked = offline_page
    page.goto(f"{bare_service.url}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "zooscope" in page.inner_text(".swagger-ui .info .title")
    # The operations come from our own /openapi.json: the upload route is listed.
    page.wait_for_selector(".opblock-summary-path[data-path='/api/v1/checkpoints']", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "api-reference-swagger.png"))
    assert blocked == [], f"the page asked for files off this machine: {blocked}"
