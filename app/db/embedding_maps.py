"""Embedding maps are the reports of succeeded embedding_map jobs: a map's id is its job's id.

The API lists and reads them from here, and the reconstruct and generate jobs find here the map
their points are placed on (the newest of their autoencoder's that their owner may see).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session, undefer

from app.db.models import Job
from app.db.visibility import visible_to

MAP_KIND = "embedding_map"


def map_filters(autoencoder_id: str | None = None) -> list[ColumnElement[bool]]:
    """The WHERE clauses of the maps (of one autoencoder): succeeded embedding_map jobs. The API
    filled params.autoencoder_id in at submission, so every map job names its autoencoder."""
    filters = [Job.kind == MAP_KIND, Job.state == "succeeded"]
    if autoencoder_id is not None:
        filters.append(Job.params["autoencoder_id"].as_string() == autoencoder_id)
    return filters


def latest_map(session: Session, autoencoder_id: str, owner_id: str | None) -> Job | None:
    """The newest map of the autoencoder that `owner_id` may see, its report loaded."""
    query = (
        select(Job)
        .where(visible_to(Job, owner_id), *map_filters(autoencoder_id))
        .order_by(Job.created_at.desc(), Job.id.desc())
        .options(undefer(Job.report))
    )
    return session.scalars(query.limit(1)).first()
