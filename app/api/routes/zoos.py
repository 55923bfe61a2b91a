"""Zoos: read-only here; build_zoo and import_zoo jobs create them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from app.api.deps import PrincipalDep, SessionDep
from app.api.problems import not_found
from app.api.schemas import Page, ZooDetail, ZooOut
from app.db.models import Checkpoint, Zoo
from app.db.visibility import visible_to

router = APIRouter(prefix="/zoos", tags=["zoos"])


@router.get("", response_model=Page[ZooOut])
def list_zoos(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict:
    where = visible_to(Zoo, principal.owner_id)
    total = session.scalar(select(func.count()).select_from(Zoo).where(where)) or 0
    items = session.scalars(
        select(Zoo).where(where).order_by(Zoo.created_at.desc(), Zoo.id).limit(limit).offset(offset)
    ).all()
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/{zoo_id}", response_model=ZooDetail)
def get_zoo(zoo_id: str, session: SessionDep, principal: PrincipalDep) -> dict:
    zoo = session.scalars(select(Zoo).where(Zoo.id == zoo_id, visible_to(Zoo, principal.owner_id))).first()
    if zoo is None:
        raise not_found("zoo", zoo_id)
    n_checkpoints = session.scalar(
        select(func.count()).select_from(Checkpoint).where(Checkpoint.zoo_id == zoo.id)
    )
    return {
        **ZooOut.model_validate(zoo).model_dump(),
        "manifest": zoo.manifest,
        "summary": zoo.summary,
        "n_checkpoints": n_checkpoints or 0,
    }
