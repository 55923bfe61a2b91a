"""The dashboard's zoo-archive upload form in headless Chromium against the real service (no
default models: the uploads are the only zoos): a hostile archive is refused with the entry named
on the page and nothing written, and the same form then uploads a good archive, whose import job
succeeds and whose zoo is listed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.zoo_archives import folder_files, make_zip, minimal_zoo
from tests.browser.conftest import ARTIFACTS, CHROMIUM, chromium_page
from tests.service_process import Service, running_service
from tests.zooscope.zoo.public_zoo_layout import write_model
from zooscope.client import ZooscopeClient
from zooscope.networks.architectures import Architecture

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (scripts/ensure-browser installs it)",
    ),
]
JOB_TIMEOUT_MS = 120_000
HOSTILE_ENTRY = "../../evil.txt"


@pytest.fixture(scope="module")
def bare_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp("zooscope-upload-data")
    with running_service(data_dir, ARTIFACTS / "upload-service.log", bootstrap_models=False) as svc:
        yield svc


@pytest.fixture(scope="module")
def js_errors() -> list[str]:
    """Uncaught exceptions of the page; the test asserts none happened."""
    return []


@pytest.fixture(scope="module")
def page(bare_service: Service, js_errors: list[str]) -> Iterator:
    with chromium_page(js_errors, viewport={"width": 1280, "height": 900}) as page:
        yield page


def _good_archive(root: Path) -> bytes:
    """Three digits CNNs in the public Model Zoos layout, zipped inside a wrapping folder."""
    for seed in range(3):
        write_model(root, f"model_{seed}", Architecture("cnn_digits", 1, 8), seed)
    return make_zip([(f"digits-zoo/{name}", data) for name, data in folder_files(root)])


def _choose(page, name: str, data: bytes) -> None:
    page.set_input_files(
        "#zoo-archive-file", files=[{"name": name, "mimeType": "application/zip", "buffer": data}]
    )


def test_the_upload_form_refuses_a_hostile_archive_then_imports_a_good_one(
    bare_service: Service, page, js_errors: list[str], tmp_path: Path
) -> None:
    page.goto(f"{bare_service.url}/#/zoos")
    page.wait_for_selector("#zoo-archive-form")
    status = page.locator("#zoo-archive-status")

    # an entry that climbs out of the archive's folder: refused, named, nothing written
    page.fill("#zoo-archive-name", "uploaded digits")
    _choose(page, "hostile.zip", make_zip([*minimal_zoo(), (HOSTILE_ENTRY, b"x")]))
    page.click("#zoo-archive-upload")
    page.wait_for_selector("#zoo-archive-status.error")
    text = status.inner_text()
    assert "hostile.zip" in text and f"entry {HOSTILE_ENTRY}" in text and "'..'" in text, text
    archives = bare_service.data_dir / "archives"
    assert not archives.exists() or not any(archives.iterdir())
    with ZooscopeClient(bare_service.url) as client:
        assert client.list_jobs(limit=10)["items"] == []  # no job was queued for it
    # the form is as it was: enabled, the name kept, ready for the next file
    assert page.is_enabled("#zoo-archive-upload")
    assert page.input_value("#zoo-archive-name") == "uploaded digits"

    _choose(page, "digits-zoo.zip", _good_archive(tmp_path / "zoo"))
    page.click("#zoo-archive-upload")
    page.wait_for_selector("#zoo-archive-status[data-job-id]", timeout=10_000)
    job_id = status.get_attribute("data-job-id")
    page.wait_for_selector("#zoo-archive-status[data-state]", timeout=JOB_TIMEOUT_MS)
    assert status.get_attribute("data-state") == "succeeded", status.inner_text()
    with ZooscopeClient(bare_service.url) as client:
        report = client.report(job_id)
    assert report["layout"] == "public" and report["skipped"] == []
    assert f"succeeded, zoo {report['zoo_id']}" in status.inner_text()
    # the zoo lives in its own folder now; the unpacked upload goes once the job has ended
    bare_service.wait_until(lambda: not any(archives.iterdir()), 10, "the unpacked upload to be removed")

    page.goto(f"{bare_service.url}/#/jobs")
    page.wait_for_selector(f"tr[data-job-id='{job_id}'][data-state=succeeded]", timeout=10_000)
    assert "import_zoo" in page.inner_text(f"tr[data-job-id='{job_id}']")

    page.goto(f"{bare_service.url}/#/zoos")
    card = page.locator(f"section.zoo[data-zoo-id='{report['zoo_id']}']")
    card.wait_for(timeout=10_000)
    assert "uploaded digits" in card.inner_text() and "3 models" in card.inner_text()
    assert page.locator("section.zoo").count() == 1  # the refused archive made none
    assert js_errors == []
