"""The builds of the service's own defaults (worker/bootstrap.py writes them, the API reads them).

A build is one row per zoo preset the service makes a default autoencoder from: its stages in
order (a job each, submitted one after the other, so a stage has no job until its turn), its
state and, once it ends, what it decided. The jobs table stays the truth about each job.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import DefaultBuild, Job
from app.db.types import utcnow


def get_build(session: Session, key: str) -> DefaultBuild | None:
    return session.scalars(select(DefaultBuild).where(DefaultBuild.key == key)).first()


def list_builds(session: Session) -> list[DefaultBuild]:
    return list(session.scalars(select(DefaultBuild).order_by(DefaultBuild.created_at)))


def start_build(
    session: Session, *, key: str, architecture_name: str, title: str, stages: list[dict[str, Any]]
) -> DefaultBuild:
    """The build of `key`, preparing: a new row, or the row of an earlier start with its stages'
    jobs kept where the stages are the same ones (a stage whose job failed is submitted again)."""
    build = get_build(session, key)
    if build is None:
        build = DefaultBuild(key=key, architecture_name=architecture_name, stages=[])
        session.add(build)
    earlier = {stage["name"]: stage.get("job_id") for stage in build.stages or []}
    build.stages = [{**stage, "job_id": earlier.get(stage["name"])} for stage in stages]
    build.title, build.state, build.outcome, build.updated_at = title, "preparing", None, utcnow()
    session.commit()
    return build


def update_stage(session: Session, key: str, name: str, **values: Any) -> None:
    """Set fields of one stage (its job_id once submitted, its estimate_s once measurable)."""
    build = get_build(session, key)
    if build is None:
        raise LookupError(f"no default build {key!r}")
    build.stages = [{**stage, **values} if stage["name"] == name else stage for stage in build.stages]
    build.updated_at = utcnow()
    session.commit()


def finish_build(session: Session, key: str, state: str, outcome: str) -> None:
    build = get_build(session, key)
    if build is None:
        raise LookupError(f"no default build {key!r}")
    build.state, build.outcome, build.updated_at = state, outcome, utcnow()
    session.commit()


def record_existing_default(session: Session, *, key: str, architecture_name: str, outcome: str) -> None:
    """A build with nothing to do (its architecture had a default already), so later starts skip
    it without looking again."""
    if get_build(session, key) is None:
        session.add(
            DefaultBuild(
                key=key, architecture_name=architecture_name, title=outcome, state="done", outcome=outcome
            )
        )
        session.commit()


def preparing_for(session: Session, architecture_name: str) -> DefaultBuild | None:
    """The build preparing a default for this architecture, if one is."""
    query = select(DefaultBuild).where(
        DefaultBuild.architecture_name == architecture_name, DefaultBuild.state == "preparing"
    )
    return session.scalars(query).first()


def stage_progress(session: Session, build: DefaultBuild) -> list[dict[str, Any]]:
    """The build's stages with their jobs' live state, progress and seconds left.

    Seconds left: 0 once succeeded; a running job's own estimate (its pace so far), else the
    build's estimate for the stage (from a smaller build on this machine), else None (unknown)."""
    job_ids = [stage["job_id"] for stage in build.stages if stage.get("job_id")]
    found = (
        {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(job_ids)))} if job_ids else {}
    )
    stages = []
    for stage in build.stages:
        job = found.get(stage.get("job_id") or "")
        state = job.state if job is not None else "waiting"
        if state == "succeeded":
            eta = 0.0
        elif state in ("failed", "cancelled"):
            eta = None
        elif state == "running" and job is not None and job.eta_s is not None:
            eta = job.eta_s
        else:
            eta = stage.get("estimate_s")
        stages.append(
            {
                "name": stage["name"],
                "kind": stage["kind"],
                "title": stage["title"],
                "job_id": job.id if job is not None else None,
                "state": state,
                "progress": job.progress if job is not None else 0.0,
                "eta_s": eta,
            }
        )
    return stages


def seconds_left(stages: list[dict[str, Any]]) -> float | None:
    """Until the build is ready: the sum over its stages, None while one of them is unknown."""
    etas = [stage["eta_s"] for stage in stages]
    return None if any(eta is None for eta in etas) else float(sum(etas))
