"""Autoencoders: read and choose the default; train_autoencoder jobs create them."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import PageLimit, PageOffset, PrincipalDep, SessionDep, get_visible
from app.api.routing import DatabaseRoute
from app.api.schemas import AutoencoderDetail, AutoencoderOut, Page
from app.db.artefacts import set_default_autoencoder
from app.db.models import Autoencoder
from app.db.visibility import visible_page

router = APIRouter(prefix="/autoencoders", tags=["autoencoders"], route_class=DatabaseRoute)


@router.get("", response_model=Page[AutoencoderOut])
def list_autoencoders(
    session: SessionDep,
    principal: PrincipalDep,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
    zoo_id: str | None = None,
) -> dict:
    filters = [Autoencoder.zoo_id == zoo_id] if zoo_id else []
    return visible_page(session, Autoencoder, principal.owner_id, *filters, limit=limit, offset=offset)


@router.get("/{autoencoder_id}", response_model=AutoencoderDetail)
def get_autoencoder(autoencoder_id: str, session: SessionDep, principal: PrincipalDep) -> Autoencoder:
    return get_visible(session, principal, Autoencoder, autoencoder_id)


@router.post("/{autoencoder_id}/default", response_model=AutoencoderDetail)
def make_default(autoencoder_id: str, session: SessionDep, principal: PrincipalDep) -> Autoencoder:
    """Make this the autoencoder that jobs on checkpoints of its architecture use when they name
    none (one default per architecture; the other architectures' defaults stay)."""
    row = get_visible(session, principal, Autoencoder, autoencoder_id)
    set_default_autoencoder(session, row.id)
    session.refresh(row)
    return row
