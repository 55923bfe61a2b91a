"""Which folders import_zoo may read: the policy, and the API's 422 for a refused folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from service_fixtures import Api

from app.import_roots import ImportPathRefused, check_import_path
from app.settings import Settings


def test_without_roots_the_keyless_embedded_mode_may_import_any_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, auth_required=False)
    assert check_import_path(settings, tmp_path / "zoo") == (tmp_path / "zoo").resolve()


def test_without_roots_a_server_with_keys_refuses_imports(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, auth_required=True)
    with pytest.raises(ImportPathRefused, match="ZOOSCOPE_IMPORT_ROOTS"):
        check_import_path(settings, tmp_path / "zoo")


def test_roots_admit_their_subfolders_only_and_symlinks_are_resolved(tmp_path: Path) -> None:
    root, outside = tmp_path / "imports", tmp_path / "private"
    (root / "zoo").mkdir(parents=True)
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    settings = Settings(data_dir=tmp_path, auth_required=True, import_roots=[root])

    assert check_import_path(settings, root / "zoo") == (root / "zoo").resolve()
    for refused in (outside, root / "escape", root / ".." / "private", "/etc"):
        with pytest.raises(ImportPathRefused, match="outside the folders imports may read"):
            check_import_path(settings, refused)


def test_roots_come_from_the_environment_separated_by_colons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZOOSCOPE_IMPORT_ROOTS", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert Settings(data_dir=tmp_path).import_roots == [tmp_path / "a", tmp_path / "b"]


def test_api_refuses_an_import_outside_the_roots_and_queues_nothing(
    api_factory: Callable[..., Api], tmp_path: Path
) -> None:
    root = tmp_path / "imports"
    (root / "zoo").mkdir(parents=True)
    api = api_factory(import_roots=[root])

    refused = api.client.post("/api/v1/jobs", json={"kind": "import_zoo", "params": {"path": "/etc"}})
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "outside the folders imports may read" in refused.json()["detail"]
    assert api.queue.sent == [] and api.rows("jobs") == 0

    accepted = api.client.post(
        "/api/v1/jobs", json={"kind": "import_zoo", "params": {"path": str(root / "zoo")}}
    )
    assert accepted.status_code == 202, accepted.text
