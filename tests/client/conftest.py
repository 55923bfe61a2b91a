from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.contract_api import create_app
from tests.client.servers import serve_in_thread

API_KEY = "test-key"


@pytest.fixture(scope="module")
def contract_app():
    return create_app(api_key=API_KEY)


@pytest.fixture(scope="module")
def contract_url(contract_app) -> Iterator[str]:
    with serve_in_thread(contract_app) as url:
        yield url


@pytest.fixture
def checkpoint_file(tmp_path: Path) -> Path:
    # The contract double only checks a magic prefix; the real service gets real checkpoints.
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"SAFE" + bytes(range(64)))
    return path
