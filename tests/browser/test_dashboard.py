"""The dashboard in headless Chromium against the real service: submit a reconstruct job from the
form, watch it succeed without a reload, read its report, and screenshot every page.

Screenshots go to test-artifacts/browser/ (CI keeps them) and are copied to docs/screenshots/ for
the README and docs/dashboard.md.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser.conftest import ARTIFACTS, CHROMIUM, chromium_page
from tests.service_process import ROOT, Service
from zooscope.client import ZooscopeClient

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (scripts/ensure-browser installs it)",
    ),
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
    with chromium_page(js_errors, viewport={"width": 1280, "height": 900}) as page:
        yield page


def screenshot(page, name: str, selector: str | None = None) -> None:
    """The whole page, or only the element `selector` names."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if selector:
        page.locator(selector).screenshot(path=str(path))
    else:
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


def _api(service: Service, path: str, **params: object) -> dict:
    response = httpx.get(f"{service.url}/api/v1{path}", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _hover_first_point(page, chart_id: str) -> list[str]:
    """Move the mouse onto dataset 0's first point; the labels of every point drawn under it."""
    at = page.evaluate(
        """id => { const c = window.__zooscopeCharts[id]; const el = c.getDatasetMeta(0).data[0];
        c.canvas.scrollIntoView({ block: "center" }); const box = c.canvas.getBoundingClientRect();
        const near = c.data.datasets.flatMap((d, i) => d.isLink ? [] : c.getDatasetMeta(i).data
          .map((e, j) => [e, d.data[j]]).filter(([e]) => Math.hypot(e.x - el.x, e.y - el.y) < 4)
          .map(([, p]) => p.label));
        return { x: box.left + el.x, y: box.top + el.y, near }; }""",
        chart_id,
    )
    page.mouse.move(at["x"], at["y"])
    return at["near"]


def test_the_embedding_map_and_the_prediction_plot(
    service: Service, uploaded: list[dict], page, js_errors: list[str]
) -> None:
    page.goto(f"{service.url}/#/autoencoders")
    card = "section.autoencoder[data-is-default=true]"
    page.click(f"{card} button.make-map")  # submits the embedding_map job and follows it
    page.wait_for_selector(f"{card} .embedding-map canvas", timeout=JOB_TIMEOUT_MS)
    ae_id = page.get_attribute(card, "data-autoencoder-id")
    map_id = _api(service, "/embedding-maps", autoencoder_id=ae_id, limit=1)["items"][0]["id"]
    points = _api(service, f"/embedding-maps/{map_id}")["points"]["items"]
    chart = f"embedding-map-{ae_id}"
    drawn = f"window.__zooscopeCharts['{chart}'].data.datasets.reduce((n, d) => n + d.data.length, 0)"
    assert page.evaluate(drawn) == len(points) > 0
    assert page.get_attribute(f"{card} .embedding-map", "data-shown") == str(len(points))
    axis = page.evaluate(f"window.__zooscopeCharts['{chart}'].options.scales.x.title.text")
    assert axis.startswith("PC1 (") and "% of variance" in axis

    near = _hover_first_point(page, chart)
    hover = f"#map-hover-{ae_id}"
    page.wait_for_function(f"document.querySelector('{hover}').textContent.includes('@')")
    named = page.inner_text(hover)
    assert named in near and named.split(" · ")[0] in {p["checkpoint"] for p in points}
    tooltip = page.evaluate(f"window.__zooscopeCharts['{chart}'].tooltip.getActiveElements().length")
    assert tooltip >= 1

    init = sorted({p["init"] for p in points})[0]
    page.select_option(f"#map-init-{ae_id}", init)
    assert page.evaluate(drawn) == sum(p["init"] == init for p in points)
    epoch = max(p["epoch"] for p in points)
    page.select_option(f"#map-epoch-{ae_id}", str(epoch))
    both = sum(p["init"] == init and p["epoch"] == epoch for p in points)
    assert page.evaluate(drawn) == both and page.get_attribute(f"{card} .embedding-map", "data-shown") == str(
        both
    )
    page.select_option(f"#map-init-{ae_id}", "")
    page.select_option(f"#map-colour-{ae_id}", "init")  # one legend entry per init
    labels = page.evaluate(f"window.__zooscopeCharts['{chart}'].data.datasets.map(d => d.label)")
    assert labels == [f"init {i}" for i in sorted({p["init"] for p in points})]
    page.select_option(f"#map-epoch-{ae_id}", "")
    page.select_option(f"#map-colour-{ae_id}", "test_acc")

    prediction = _api(service, f"/embedding-maps/{map_id}/property-prediction")
    for kind in ("embedding", "weight_statistics"):
        r2 = prediction["probes"][kind]["r2_test"]
        assert page.inner_text(f"#r2-{kind}-{ae_id} .value") == ("–" if r2 is None else f"{r2:.3f}")
    plot = f"window.__zooscopeCharts['prediction-plot-{ae_id}'].data.datasets"
    assert page.evaluate(f"{plot}.length") == 3  # embedding, weight statistics, the diagonal
    assert page.evaluate(f"{plot}[0].data.length") == prediction["items"]["total"] > 0
    assert "R²" in page.evaluate(f"{plot}[0].label") and "R²" in page.evaluate(f"{plot}[1].label")
    screenshot(page, "embedding-map", f"{card} .weight-space")

    # A reconstruct and a generate job run now land on that map, beside the zoo's checkpoints.
    ids = [str(c["id"]) for c in uploaded]
    with ZooscopeClient(service.url) as client:
        reconstruct = client.submit("reconstruct", {"checkpoint_ids": ids})["id"]
        generate = client.submit("generate", {"n_samples": 4, "threshold": 0.0})["id"]
        for job_id in (reconstruct, generate):
            assert client.wait(job_id, timeout=JOB_TIMEOUT_MS / 1000)["state"] == "succeeded"
    sets = "window.__zooscopeCharts['embedding-map-report'].data.datasets"
    page.goto(f"{service.url}/#/jobs/{reconstruct}")
    page.wait_for_selector(".placed-on-map canvas")
    assert page.evaluate(f"{sets}.map(d => d.label)") == [
        "zoo checkpoints",
        "originals",
        "reconstructions",
        "original → reconstruction",
    ]
    assert page.evaluate(f"{sets}.map(d => d.data.length)") == [len(points), len(ids), len(ids), 3 * len(ids)]
    screenshot(page, "report-map", ".placed-on-map")
    page.goto(f"{service.url}/#/jobs/{generate}")
    page.wait_for_selector(".placed-on-map canvas")
    assert page.evaluate(f"{sets}.map(d => d.label)") == [
        "zoo checkpoints",
        "anchors",
        "generated",
        "anchor → generated",
    ]
    assert page.evaluate(f"{sets}[2].data.length") == 4
    assert page.evaluate(f"{sets}[3].data.length") == 3 * 4  # every generated model joined to its anchor
    near = _hover_first_point(page, "embedding-map-report")
    page.wait_for_function("document.querySelector('#map-hover-report').textContent.includes('@')")
    assert page.inner_text("#map-hover-report") in near

    page.goto(f"{service.url}/#/jobs/{map_id}")  # the map job's own report
    page.wait_for_selector("#embedding-map-report")
    assert page.evaluate(drawn.replace(chart, "embedding-map-report")) == len(points)
    assert page.inner_text("#fig-map-points .value") == str(len(points))
    assert js_errors == []


def test_the_defaults_banner_says_which_default_serves_and_what_is_prepared(
    service: Service, page, js_errors: list[str]
) -> None:
    served = _api(service, "/defaults")["autoencoders"][0]
    page.goto(f"{service.url}/#/jobs")
    line = page.wait_for_selector("#defaults li.default")
    text = line.inner_text()
    assert served["name"] in text and served["architecture"] in text
    agreement = served["quality"]["agreement"]
    assert f"agreement {100 * agreement:.1f} %" in text and f"{served['quality']['checkpoints']} test" in text
    assert page.get_attribute("#defaults", "data-preparing") == "0"

    # A first start in progress: a quick default serves while the full one is prepared. The
    # answer is the API's, with a build in preparation added; the banner shows its stage and ETA,
    # and polls again soon, so the finished state replaces it without a reload.
    preparing = {
        "autoencoders": [{**served, "quick": True}],
        "builds": [
            {
                "key": "default:cnn_digits", "architecture": served["architecture"],
                "title": "the cpu autoencoder on the digits zoo", "state": "preparing", "outcome": None,
                "stage": "train the cpu autoencoder", "eta_s": 754.0, "stages": [],
            }
        ],
    }  # fmt: skip
    page.route("**/api/v1/defaults", lambda route: route.fulfill(json=preparing))
    page.reload()
    build = page.wait_for_selector("#defaults li.build")
    assert "Preparing: the cpu autoencoder on the digits zoo" in build.inner_text()
    assert "now: train the cpu autoencoder, ready in about 12 min 34 s" in build.inner_text()
    assert page.get_attribute("#defaults li.default", "data-quick") == "true"
    page.unroute("**/api/v1/defaults")
    page.wait_for_selector("#defaults[data-preparing='0']", timeout=15_000)
    assert page.query_selector("#defaults li.build") is None
    assert page.get_attribute("#defaults li.default", "data-quick") == "false"
    assert js_errors == []
