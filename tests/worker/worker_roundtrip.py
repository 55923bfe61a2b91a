"""The user's path through the service, shared by the PostgreSQL/Redis and the embedded tests:
upload -> reconstruct -> poll -> report -> download, then re-score the download independently."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from zooscope.networks.checkpoints import load_checkpoint
from zooscope.networks.parameters import stack_state_dicts
from zooscope.population.forward import population_forward
from zooscope.zoo.store import Zoo

TERMINAL = ("succeeded", "failed", "cancelled")


def upload_zoo_checkpoints(client: httpx.Client, zoo_dir: Path, n: int, skip: int = 0) -> list[str]:
    """Upload `n` test-split checkpoints of the zoo; their ids."""
    records = Zoo.open(zoo_dir).checkpoints(split="test")[skip : skip + n]
    ids = []
    for record in records:
        response = client.post(
            "/api/v1/checkpoints",
            files={"file": (record.path.name, record.path.read_bytes(), "application/octet-stream")},
        )
        assert response.status_code in (200, 201), response.text
        ids.append(response.json()["id"])
    return ids


def submit(client: httpx.Client, kind: str, params: dict[str, Any]) -> str:
    response = client.post("/api/v1/jobs", json={"kind": kind, "params": params})
    assert response.status_code == 202, response.text
    assert response.headers["Location"].endswith(response.json()["id"])
    return response.json()["id"]


def job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_job(
    client: httpx.Client, job_id: str, timeout: float, context: Any = lambda: ""
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job(client, job_id)
        if state["state"] in TERMINAL:
            return state
        time.sleep(0.3)
    pytest.fail(f"job {job_id} did not finish in {timeout} s: {job(client, job_id)}\n{context()}")


def accuracy_and_predictions(state_dict: dict[str, torch.Tensor], zoo: Zoo) -> tuple[float, torch.Tensor]:
    test = zoo.dataset().test
    logits = population_forward(zoo.architecture, stack_state_dicts(zoo.architecture, [state_dict]), test.x)[
        0
    ]
    predictions = logits.argmax(-1)
    return float((predictions == test.y).float().mean()), predictions


def reconstruct_and_verify(
    client: httpx.Client, ids: list[str], zoo_dir: Path, timeout: float
) -> dict[str, Any]:
    """Reconstruct `ids` through the service and check every reported number on the downloads."""
    job_id = submit(client, "reconstruct", {"checkpoint_ids": ids})
    final = wait_for_job(client, job_id, timeout)
    assert final["state"] == "succeeded", final
    report = client.get(f"/api/v1/jobs/{job_id}/report").json()
    assert [item["checkpoint_id"] for item in report["items"]] == ids
    # where the job's time went, phase by phase (the service benchmark reads these)
    assert set(report["timings_s"]) == {"load", "reconstruct_and_evaluate", "store_blobs", "store_rows"}
    assert all(seconds >= 0 for seconds in report["timings_s"].values())
    zoo = Zoo.open(zoo_dir)
    for item in report["items"]:
        original = load_checkpoint(
            client.get(f"/api/v1/checkpoints/{item['checkpoint_id']}/download").content
        )
        download = client.get(f"/api/v1/checkpoints/{item['reconstruction_id']}/download")
        assert download.status_code == 200
        reconstruction = load_checkpoint(download.content)
        accuracy, predictions = accuracy_and_predictions(reconstruction, zoo)
        original_accuracy, original_predictions = accuracy_and_predictions(original, zoo)
        agreement = float((predictions == original_predictions).float().mean())
        assert accuracy == pytest.approx(item["reconstructed_accuracy"], abs=1e-6)
        assert original_accuracy == pytest.approx(item["original_accuracy"], abs=1e-6)
        assert agreement == pytest.approx(item["agreement"], abs=1e-6)
        row = client.get(f"/api/v1/checkpoints/{item['reconstruction_id']}").json()
        assert row["kind"] == "reconstructed"
    return report
