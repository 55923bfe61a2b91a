"""The dashboard in headless Chromium against the real service: submit a reconstruct job from the
form, watch it succeed without a reload, read its report, and screenshot every page.

Screenshots go to test-artifacts/browser/ (CI keeps them) and are copied to docs/screenshots/ for
the README and docs/dashboard.md.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.conftest import ARTIFACTS
from tests.service_process import ROOT, Service
from zooscope.client import ZooscopeClient

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (scripts/ensure-browser installs it)",
    ),
]
# Flags that keep Chromium from reaching the network or needing a GPU or a sandbox in a container.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
JOB_TIMEOUT_MS = 300_000
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"


@pytest.fixture(scope="module")
def uploaded(service: Service, zoo_checkpoint_files: list[Path]) -> list[dict]:
    with ZooscopeClient(service.url) as client:
        return [client.upload(path) for path in zoo_checkpoint_files]


@pytest.fixture(scope="module")
def js_errors() -> list[str]:
    """Uncaught exceptions of the page; each test asserts none happened."""
    return []


@pytest.fixture(scope="module")
def page(service: Service, js_errors: list[str]) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda exc: js_errors.append(str(exc)))
        yield page
        browser.close()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, DOCS_SCREENSHOTS / f"{name}.png")


def test_reconstruct_job_from_the_form_to_its_report(
    service: Service, uploaded: list[dict], page, js_errors: list[str]
) -> None:
    ids = [str(c["id"]) for c in uploaded]
    page.goto(f"{service.url}/#/jobs")
    page.wait_for_selector("#job-form input[name=checkpoint]")
    before = set(page.eval_on_selector_all("tr[data-job-id]", "rows => rows.map(r => r.dataset.jobId)"))
    page.evaluate("window.__notReloaded = true")  # a reload would wipe this

    page.select_option("#job-kind", "reconstruct")
    for cid in ids:
        page.check(f"#job-form input[name=checkpoint][value='{cid}']")
    page.click("#job-form button[type=submit]")

    new_row = page.wait_for_function(
        "before => [...document.querySelectorAll('tr[data-job-id]')].map(r => r.dataset.jobId)"
        ".find(id => !before.includes(id))",
        arg=list(before),
        timeout=10_000,
    )
    job_id = new_row.json_value()
    page.wait_for_selector(f"tr[data-job-id='{job_id}'][data-state=succeeded]", timeout=JOB_TIMEOUT_MS)
    assert page.evaluate("window.__notReloaded") is True, "the page reloaded instead of polling"
    page.wait_for_function("document.body.dataset.polling === 'false'", timeout=5_000)
    screenshot(page, "jobs")

    with ZooscopeClient(service.url) as client:
        assert client.get_job(job_id)["state"] == "succeeded"  # the page told the truth

    page.click(f"tr[data-job-id='{job_id}'] a.report-link")
    page.wait_for_selector("#report-items tbody tr")
    points = page.evaluate("window.__zooscopeCharts['scatter-plot'].data.datasets[0].data.length")
    assert points == len(ids)
    drawn = page.evaluate("window.__zooscopeCharts['scatter-plot'].getDatasetMeta(0).data.length")
    assert drawn == len(ids)
    assert page.locator("#report-items tbody tr").count() == len(ids)
    assert page.locator("#report-items a.download").count() == len(ids)
    assert page.inner_text("#fig-agreement .value") not in ("", "–")
    screenshot(page, "report")
    assert js_errors == []


def test_other_pages_render(service: Service, uploaded: list[dict], page, js_errors: list[str]) -> None:
    page.goto(f"{service.url}/#/checkpoints")
    for c in uploaded:
        page.wait_for_selector(f"#checkpoints-table tr[data-checkpoint-id='{c['id']}']")
    assert c["architecture"] in page.inner_text("#checkpoints-table")
    screenshot(page, "checkpoints")

    page.goto(f"{service.url}/#/zoos")
    page.wait_for_selector("section.zoo canvas")
    assert page.evaluate("Object.keys(window.__zooscopeCharts).some(k => k.startsWith('zoo-accuracy-'))")
    screenshot(page, "zoos")

    page.goto(f"{service.url}/#/autoencoders")
    page.wait_for_selector("section.autoencoder")
    assert page.locator("section.autoencoder[data-is-default=true]").count() == 1
    curves = page.evaluate(
        "Object.entries(window.__zooscopeCharts).filter(([k]) => k.startsWith('ae-curves-'))"
        ".map(([, c]) => c.data.datasets.length)"
    )
    assert curves and all(n >= 2 for n in curves)  # at least two loss terms per autoencoder
    screenshot(page, "autoencoders")
    assert js_errors == []
