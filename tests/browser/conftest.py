"""The real service for the browser test, with a tiny default zoo and autoencoder built on first start."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.service_process import ROOT, Service, running_service
from zooscope.client import ZooscopeClient

ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
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
# The first start trains the tiny zoo and autoencoder; two shared cores make that minutes, not seconds.
BOOTSTRAP_TIMEOUT_S = 480.0


@contextmanager
def chromium_page(js_errors: list[str], **page_options: object) -> Iterator:
    """A page of Debian's headless Chromium; its uncaught exceptions are appended to js_errors."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(**page_options)
        page.on("pageerror", lambda exc: js_errors.append(str(exc)))
        try:
            yield page
        finally:
            browser.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp("zooscope-data")
    with running_service(data_dir, ARTIFACTS / "service.log", bootstrap_models=True) as svc:
        with ZooscopeClient(svc.url, timeout=10) as client:

            def bootstrapped() -> bool:
                jobs = client.list_jobs(limit=100)["items"]
                failed = [j for j in jobs if j["state"] in ("failed", "cancelled")]
                if failed:  # waiting would only run out the clock
                    errors = "\n".join(f"{j['kind']}: {j.get('error')}" for j in failed)
                    pytest.fail(f"bootstrapping the default models failed:\n{errors}\n{svc.log_tail()}")
                active = [j for j in jobs if j["state"] in ("queued", "running")]
                return not active and client.list_autoencoders().get("total", 0) >= 1

            svc.wait_until(bootstrapped, BOOTSTRAP_TIMEOUT_S, "waiting for the default zoo and autoencoder")
        yield svc


@pytest.fixture(scope="module")
def zoo_checkpoint_files(service: Service, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A few members of the default zoo, written as safetensors files as a user would have them."""
    from zooscope.networks.checkpoints import save_checkpoint
    from zooscope.networks.parameters import unstack
    from zooscope.zoo.store import Zoo

    zoo_dirs = sorted(p for p in service.data_dir.glob("zoos/*") if p.is_dir())
    assert zoo_dirs, "the service built no zoo under its data directory"
    zoo = Zoo.open(zoo_dirs[0])
    checkpoint_set = zoo.load_checkpoints(zoo.checkpoints()[:4])
    out = tmp_path_factory.mktemp("uploads")
    files = []
    for i, state_dict in enumerate(unstack(checkpoint_set.params)):
        path = out / f"zoo-member-{i}.safetensors"
        save_checkpoint(state_dict, path, {"source": "browser test"})
        files.append(path)
    return files
