"""Embedding maps: read here; embedding_map jobs make them. A map is the stored report of its job
(app/db/embedding_maps.py), so these routes read JSON and run no model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session, undefer

from app.api.auth import Principal
from app.api.deps import MAX_OFFSET, PageLimit, PageOffset, PrincipalDep, SessionDep
from app.api.problems import PROBLEM_RESPONSES, Problem, not_found
from app.api.routing import DatabaseRoute
from app.api.schemas import EmbeddingMapDetail, EmbeddingMapOut, Page, PropertyPredictionOut
from app.db.embedding_maps import MAP_KIND, map_filters
from app.db.models import Job
from app.db.visibility import find_visible, visible_page

router = APIRouter(prefix="/embedding-maps", tags=["embedding maps"], route_class=DatabaseRoute)
# A map is drawn whole: pages far larger than a listing's keep a zoo of thousands of checkpoints
# to a request or two.
MAX_POINTS_PAGE = 10_000
PointsLimit = Annotated[
    int, Query(ge=1, le=MAX_POINTS_PAGE, description=f"points per page, at most {MAX_POINTS_PAGE:,}")
]
PointsOffset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="points to skip, in the map's order")]


def _problems(descriptions: dict[int, str]) -> dict[int | str, dict]:
    """The app's problem+json responses, with what these statuses mean on a route."""
    return {
        status: {**PROBLEM_RESPONSES[status], "description": text} for status, text in descriptions.items()
    }


NOT_A_MAP = {
    404: "no embedding map with this id (an embedding_map job's id), or not yours",
    409: "the embedding_map job has not succeeded (yet)",
}


def _summary(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "autoencoder_id": job.params.get("autoencoder_id"),
        "shared": job.shared,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
    }


def _page(items: list[Any], limit: int, offset: int) -> dict[str, Any]:
    return {"items": items[offset : offset + limit], "total": len(items), "limit": limit, "offset": offset}


def _map_job(session: Session, principal: Principal, map_id: str) -> Job:
    job = find_visible(session, Job, map_id, principal.owner_id, undefer(Job.report))
    if job is None or job.kind != MAP_KIND:
        raise not_found("embedding map", map_id)
    if job.state != "succeeded" or job.report is None:
        raise Problem(
            409,
            f"the embedding_map job {map_id} is {job.state}: the map exists once it has succeeded",
            type_="report-not-ready",
            state=job.state,
        )
    return job


@router.get("", response_model=Page[EmbeddingMapOut])
def list_embedding_maps(
    session: SessionDep,
    principal: PrincipalDep,
    autoencoder_id: str | None = None,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
) -> dict:
    """The maps made so far, newest first; with `autoencoder_id`, that autoencoder's (the first
    is its latest). Submit a job of kind embedding_map to make one."""
    page = visible_page(
        session, Job, principal.owner_id, *map_filters(autoencoder_id), limit=limit, offset=offset
    )
    return {**page, "items": [_summary(job) for job in page["items"]]}


@router.get("/{map_id}", response_model=EmbeddingMapDetail, responses=_problems(NOT_A_MAP))
def get_embedding_map(
    map_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    limit: PointsLimit = MAX_POINTS_PAGE,
    offset: PointsOffset = 0,
) -> dict:
    """Every checkpoint of the autoencoder's zoo on the PCA of its embeddings (PC1, PC2), with its
    split, init, epoch and test accuracy, one page of points at a time; and the projection, so a
    later embedding can be placed on the same axes."""
    job = _map_job(session, principal, map_id)
    report = job.report
    return {
        **_summary(job),
        "zoo_id": report.get("zoo_id"),
        "metadata": report.get("metadata", {}),
        "projection": report["projection"],
        "points": _page(report["points"], limit, offset),
    }


@router.get(
    "/{map_id}/property-prediction",
    response_model=PropertyPredictionOut,
    responses=_problems({**NOT_A_MAP, 404: "no such map, or its zoo could not train a probe"}),
)
def get_property_prediction(
    map_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    limit: PointsLimit = MAX_POINTS_PAGE,
    offset: PointsOffset = 0,
) -> dict:
    """Predicted against true test accuracy of the zoo's test-split checkpoints, by ridge probes on
    the autoencoder's embedding and on weight statistics (the baseline), with each probe's R^2."""
    job = _map_job(session, principal, map_id)
    prediction = job.report.get("prediction")
    if not prediction:
        raise Problem(
            404,
            f"map {map_id} has no property prediction: its zoo has fewer than two training "
            "checkpoints or no test split",
            type_="no-property-prediction",
        )
    return {
        "map_id": job.id,
        "property": prediction["property"],
        "split": prediction["split"],
        "probes": prediction["probes"],
        "items": _page(prediction["items"], limit, offset),
    }
