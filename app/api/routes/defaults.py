"""The defaults: which autoencoder serves each architecture, how faithful it is, and what the
service is preparing to replace or add to them (worker/bootstrap.py's builds)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.deps import PrincipalDep, SessionDep
from app.api.routing import DatabaseRoute
from app.api.schemas import DefaultsOut
from app.db import default_builds
from app.db.artefacts import default_autoencoders
from app.db.models import Autoencoder, Job, Zoo

router = APIRouter(prefix="/defaults", tags=["defaults"], route_class=DatabaseRoute)


@router.get("", response_model=DefaultsOut)
def get_defaults(session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    """The default autoencoder of each architecture with its quality, and the builds of defaults
    in preparation (stage in progress, seconds until ready) or finished (what they decided)."""
    owner = principal.owner_id
    builds = default_builds.list_builds(session)
    quick_jobs = {
        stage["job_id"] for build in builds for stage in build.stages if stage["name"] == "quick-autoencoder"
    }
    defaults = [
        _describe_default(session, row, quick_jobs)
        for row in default_autoencoders(session)
        if row.owner_id is None or row.owner_id == owner
    ]
    described = [_describe_build(session, build) for build in builds]
    described.sort(key=lambda build: build["state"] != "preparing")  # stable: oldest first in each
    return {"autoencoders": defaults, "builds": described}


def _describe_default(session: Session, row: Autoencoder, quick_jobs: set[str]) -> dict[str, Any]:
    zoo = session.get(Zoo, row.zoo_id) if row.zoo_id else None
    preset = None
    if row.source_job_id:
        params = session.scalar(select(Job.params).where(Job.id == row.source_job_id))
        preset = (params or {}).get("preset")
    aggregate = row.evaluation or {}
    high = aggregate.get("agreement_high_accuracy") or {}
    return {
        "architecture": row.architecture_name,
        "autoencoder_id": row.id,
        "name": row.name,
        "preset": preset,
        "zoo_id": row.zoo_id,
        "zoo_name": zoo.name if zoo else None,
        "quick": row.source_job_id in quick_jobs,
        "quality": {
            "measured_on": f"the test split of {zoo.name}" if zoo else "the test split of its zoo",
            "checkpoints": aggregate.get("n"),
            "agreement": _mean(aggregate, "agreement"),
            "agreement_high_accuracy": high.get("mean"),
            "high_accuracy_threshold": high.get("threshold"),
            "original_accuracy": _mean(aggregate, "original_accuracy"),
            "reconstructed_accuracy": _mean(aggregate, "reconstructed_accuracy"),
        },
    }


def _describe_build(session: Session, build: Any) -> dict[str, Any]:
    stages = default_builds.stage_progress(session, build)
    preparing = build.state == "preparing"
    current = next((s for s in stages if s["state"] != "succeeded"), None) if preparing else None
    return {
        "key": build.key,
        "architecture": build.architecture_name,
        "title": build.title,
        "state": build.state,
        "outcome": build.outcome,
        "stage": current["title"] if current else None,
        "eta_s": default_builds.seconds_left(stages) if preparing else None,
        "stages": stages,
        "updated_at": build.updated_at,
    }


def _mean(aggregate: dict[str, Any], metric: str) -> float | None:
    value = aggregate.get(metric)
    return value.get("mean") if isinstance(value, dict) else None
