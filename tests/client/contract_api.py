"""An in-memory double of the public API contract, for testing the client's own logic.

It exists so the client's transport, error mapping, waiting and exit codes are tested quickly and
deterministically, independent of the worker's speed. Jobs move one state per GET; a job's fate is
steered by the test-only param `outcome` ("succeeded", "failed", "cancelled" or "never").
test_client_service.py runs the same client against the real service.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from app.api.conditional import entity_tag, not_modified, still_current, validator_headers

PROBLEM = "application/problem+json"


def _problem(status: int, title: str, detail: str) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def create_app(api_key: str | None = None) -> FastAPI:
    app = FastAPI()
    ids = itertools.count(1)
    checkpoints: dict[int, dict[str, Any]] = {}
    blobs: dict[int, bytes] = {}
    jobs: dict[int, dict[str, Any]] = {}
    app.state.seen_headers = []
    app.state.not_modified = 0  # listings answered 304

    @app.middleware("http")
    async def auth(request: Request, call_next: Any) -> Response:
        app.state.seen_headers.append(dict(request.headers))
        # Only the API needs the key: a dashboard mounted beside it must load without one.
        protected = request.url.path.startswith("/api/")
        if api_key and protected and request.headers.get("authorization") != f"Bearer {api_key}":
            return _problem(401, "Unauthorized", "missing or wrong API key")
        return await call_next(request)

    @app.post("/api/v1/checkpoints", status_code=201)
    async def upload(file: UploadFile = File(...)) -> Any:
        data = await file.read()
        if not data.startswith(b"SAFE"):
            return _problem(422, "Invalid checkpoint", f"{file.filename} is not a checkpoint")
        cid = next(ids)
        checkpoints[cid] = {
            "id": cid,
            "sha256": hashlib.sha256(data).hexdigest(),
            "architecture": "cnn-digits",
            "n_parameters": len(data),
            "n_tokens": 3,
            "name": file.filename,
            "created_at": _now(),
        }
        blobs[cid] = data
        return checkpoints[cid]

    @app.get("/api/v1/checkpoints")
    def list_checkpoints(limit: int = 50, offset: int = 0) -> Any:
        items = list(checkpoints.values())
        return {"items": items[offset : offset + limit], "total": len(items)}

    @app.get("/api/v1/checkpoints/{cid}")
    def get_checkpoint(cid: int) -> Any:
        return checkpoints.get(cid) or _problem(404, "Not found", f"no checkpoint {cid}")

    @app.get("/api/v1/checkpoints/{cid}/download")
    def download(cid: int, format: str = "safetensors") -> Any:
        if cid not in blobs:
            return _problem(404, "Not found", f"no checkpoint {cid}")
        return Response(blobs[cid] + format.encode(), media_type="application/octet-stream")

    @app.post("/api/v1/jobs", status_code=202)
    async def submit(request: Request) -> Any:
        body = await request.json()
        if body.get("kind") not in {"encode", "reconstruct", "generate", "evaluate"}:
            return _problem(422, "Invalid job", f"unknown kind {body.get('kind')!r}")
        jid = next(ids)
        jobs[jid] = {
            "id": jid,
            "kind": body["kind"],
            "state": "queued",
            "progress": 0.0,
            "message": "queued",
            "created_at": _now(),
            "started_at": None,
            "finished_at": None,
            "error": None,
            "params": body.get("params", {}),
            "idempotency_key": request.headers.get("idempotency-key"),
        }
        return JSONResponse(jobs[jid], status_code=202, headers={"Location": f"/api/v1/jobs/{jid}"})

    @app.get("/api/v1/jobs")
    def list_jobs(request: Request, limit: int = 50, offset: int = 0, state: str | None = None) -> Any:
        # Conditional as the service's listing is (app/api/conditional.py), with the page's content
        # as its version.
        items = [j for j in jobs.values() if state in (None, j["state"])]
        body = {"items": items[offset : offset + limit], "total": len(items)}
        etag = entity_tag(json.dumps(body, sort_keys=True))
        if still_current(request.headers.get("if-none-match"), etag):
            app.state.not_modified += 1
            return not_modified(etag)
        return JSONResponse(body, headers=validator_headers(etag))

    @app.get("/api/v1/jobs/{jid}")
    def get_job(jid: int) -> Any:
        job = jobs.get(jid)
        if job is None:
            return _problem(404, "Not found", f"no job {jid}")
        outcome = job["params"].get("outcome", "succeeded")
        if job["state"] == "queued":
            job.update(state="running", started_at=_now(), message="working")
        elif job["state"] == "running" and outcome != "never":
            job["progress"] = min(1.0, job["progress"] + 0.5)
            if job["progress"] >= 1.0:
                job.update(state=outcome, finished_at=_now())
                if outcome == "failed":
                    job["error"] = "stub failure"
        return job

    @app.post("/api/v1/jobs/{jid}/cancel")
    def cancel(jid: int) -> Any:
        jobs[jid].update(state="cancelled", finished_at=_now())
        return jobs[jid]

    @app.get("/api/v1/jobs/{jid}/report")
    def report(jid: int) -> Any:
        job = jobs.get(jid)
        if job is None or job["state"] != "succeeded":
            return _problem(409, "Not finished", f"job {jid} has no report")
        items = [
            {
                "checkpoint_id": c,
                "original_accuracy": 0.9,
                "reconstructed_accuracy": 0.8,
                "agreement": 0.85,
                "structural_distance": 0.1,
                "behavioural_distance": 0.2,
                "reconstruction_id": c,
            }
            for c in job["params"].get("checkpoint_ids", [])
        ]
        return {"items": items, "aggregate": {"agreement": {"mean": 0.85, "std": 0.0}}}

    return app
