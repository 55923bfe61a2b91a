"""Zoo and autoencoder rows, written by the worker's build/import/train jobs, read by the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.models import Autoencoder, Zoo


def add_zoo(
    session: Session,
    *,
    name: str,
    path: str,
    manifest: dict[str, Any] | None = None,
    summary: dict[str, Any] | None = None,
    dataset: str | None = None,
    architecture: dict[str, Any] | None = None,
    n_models: int = 0,
    owner_id: str | None = None,
    source_job_id: str | None = None,
) -> Zoo:
    zoo = Zoo(
        name=name,
        path=path,
        manifest=manifest or {},
        summary=summary or {},
        dataset=dataset,
        architecture=architecture,
        n_models=n_models,
        owner_id=owner_id,
        source_job_id=source_job_id,
    )
    session.add(zoo)
    session.commit()
    return zoo


def find_zoo_by_path(session: Session, path: str) -> Zoo | None:
    return session.scalars(select(Zoo).where(Zoo.path == path)).first()


def add_autoencoder(
    session: Session,
    *,
    name: str,
    path: str,
    zoo_id: str | None = None,
    config: dict[str, Any] | None = None,
    training_log: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    owner_id: str | None = None,
    source_job_id: str | None = None,
    make_default: bool = False,
) -> Autoencoder:
    """Insert an autoencoder; with make_default (or when none is default yet) it becomes the default."""
    ae = Autoencoder(
        name=name,
        path=path,
        zoo_id=zoo_id,
        config=config or {},
        training_log=training_log or {},
        evaluation=evaluation or {},
        owner_id=owner_id,
        source_job_id=source_job_id,
        is_default=False,
    )
    session.add(ae)
    session.commit()
    if make_default or get_default_autoencoder(session) is None:
        set_default_autoencoder(session, ae.id)
    return ae


def get_default_autoencoder(session: Session) -> Autoencoder | None:
    return session.scalars(select(Autoencoder).where(Autoencoder.is_default.is_(True))).first()


def set_default_autoencoder(session: Session, autoencoder_id: str) -> None:
    """One default for the whole service: clear the old one, then set the new one, in one commit."""
    session.execute(
        update(Autoencoder)
        .where(Autoencoder.is_default.is_(True))
        .values(is_default=False)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    session.execute(
        update(Autoencoder)
        .where(Autoencoder.id == autoencoder_id)
        .values(is_default=True)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    # The UPDATEs bypassed the identity map: reload is_default on loaded autoencoders only.
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Autoencoder):
            session.refresh(obj, ["is_default"])
