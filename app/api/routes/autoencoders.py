"""Autoencoders: read and choose the default; train_autoencoder jobs create them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from app.api.deps import PrincipalDep, SessionDep
from app.api.problems import not_found
from app.api.schemas import AutoencoderDetail, AutoencoderOut, Page
from app.db.artefacts import set_default_autoencoder
from app.db.models import Autoencoder
from app.db.visibility import visible_to

router = APIRouter(prefix="/autoencoders", tags=["autoencoders"])


def get_visible(session: SessionDep, principal: PrincipalDep, autoencoder_id: str) -> Autoencoder:
    row = session.scalars(
        select(Autoencoder).where(
            Autoencoder.id == autoencoder_id, visible_to(Autoencoder, principal.owner_id)
        )
    ).first()
    if row is None:
        raise not_found("autoencoder", autoencoder_id)
    return row


@router.get("", response_model=Page[AutoencoderOut])
def list_autoencoders(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    zoo_id: str | None = None,
) -> dict:
    where = [visible_to(Autoencoder, principal.owner_id)]
    if zoo_id:
        where.append(Autoencoder.zoo_id == zoo_id)
    total = session.scalar(select(func.count()).select_from(Autoencoder).where(*where)) or 0
    items = session.scalars(
        select(Autoencoder)
        .where(*where)
        .order_by(Autoencoder.created_at.desc(), Autoencoder.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/{autoencoder_id}", response_model=AutoencoderDetail)
def get_autoencoder(autoencoder_id: str, session: SessionDep, principal: PrincipalDep) -> Autoencoder:
    return get_visible(session, principal, autoencoder_id)


@router.post("/{autoencoder_id}/default", response_model=AutoencoderDetail)
def make_default(autoencoder_id: str, session: SessionDep, principal: PrincipalDep) -> Autoencoder:
    """Make this the autoencoder that jobs use when they name none (one default for the service)."""
    row = get_visible(session, principal, autoencoder_id)
    set_default_autoencoder(session, row.id)
    session.refresh(row)
    return row
