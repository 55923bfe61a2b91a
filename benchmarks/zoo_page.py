"""Shows a built zoo on the dashboard's zoo page, the way a user with a remote service brings one:
packs the zoo folder as a .tar.gz, starts `zooscope serve` on a fresh data folder (no default
models, so the upload is the only zoo), uploads the archive with the client, waits for its
import_zoo job and screenshots the zoos page in Debian's headless Chromium.

    .venv/bin/python benchmarks/zoo_page.py --zoo DIR [--screenshot docs/screenshots/zoo-NAME.png]

DIR is what `zooscope zoo build --out DIR` wrote. Prints the archive's size, the upload and import
times, and the zoo as the API lists it.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.browser.conftest import chromium_page  # noqa: E402
from tests.service_process import ROOT, running_service  # noqa: E402
from zooscope.client import ZooscopeClient  # noqa: E402
from zooscope.zoo.store import Zoo  # noqa: E402

IMPORT_TIMEOUT_S = 900.0


def pack(zoo_dir: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(zoo_dir, arcname=zoo_dir.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, required=True, help="a folder `zooscope zoo build` wrote")
    parser.add_argument("--name", default=None, help="the zoo's name in the service (default: the folder's)")
    parser.add_argument("--screenshot", type=Path, default=None, help="default: docs/screenshots/zoo-DIR.png")
    args = parser.parse_args()
    zoo = Zoo.open(args.zoo)  # a folder that is not a zoo fails here, before anything starts
    print(f"zoo folder: {args.zoo}, {len(zoo.models)} models of {zoo.architecture.name}")
    shot = args.screenshot or ROOT / "docs" / "screenshots" / f"zoo-{args.zoo.name}.png"

    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / f"{args.zoo.name}.tar.gz"
        pack(args.zoo, archive)
        print(f"archive: {archive.name}, {archive.stat().st_size / 2**20:.1f} MiB")
        data_dir = Path(tmp) / "data"
        with running_service(data_dir, Path(tmp) / "service.log", bootstrap_models=False) as service:
            with ZooscopeClient(service.url, timeout=30) as client:
                started = time.monotonic()
                job = client.upload_zoo_archive(archive, name=args.name)
                uploaded = time.monotonic()
                job = client.wait(job["id"], timeout=IMPORT_TIMEOUT_S)
                imported = time.monotonic()
                if job["state"] != "succeeded":
                    raise SystemExit(f"import_zoo job {job['id']} {job['state']}: {job.get('error')}")
                print(f"upload (checked and unpacked): {uploaded - started:.1f} s")
                print(f"import job: {imported - uploaded:.1f} s")
                for z in client.list_zoos()["items"]:
                    print(f"zoo {z['id']}: {z['name']}, {z['n_models']} models, {z['dataset']}")

            errors: list[str] = []
            with chromium_page(errors, viewport={"width": 1280, "height": 900}) as page:
                page.goto(f"{service.url}/#/zoos")
                page.wait_for_selector("section.zoo canvas")
                page.wait_for_function(
                    "Object.keys(window.__zooscopeCharts || {}).some(k => k.startsWith('zoo-accuracy-'))"
                )
                shot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shot), full_page=True)
            if errors:
                raise SystemExit(f"the page raised: {errors}")
    print(f"screenshot: {shot}")


if __name__ == "__main__":
    main()
