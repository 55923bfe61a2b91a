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
    architecture_name: str,
    zoo_id: str | None = None,
    config: dict[str, Any] | None = None,
    training_log: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    owner_id: str | None = None,
    source_job_id: str | None = None,
    make_default: bool = False,
) -> Autoencoder:
    """Insert an autoencoder; with make_default (or when its architecture has no default yet) it
    becomes its architecture's default."""
    ae = Autoencoder(
        name=name,
        path=path,
        architecture_name=architecture_name,
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
    if make_default or get_default_autoencoder(session, architecture_name) is None:
        set_default_autoencoder(session, ae.id)
    return ae


def default_autoencoders(session: Session) -> list[Autoencoder]:
    """Every architecture's default, by architecture name."""
    query = select(Autoencoder).where(Autoencoder.is_default.is_(True))
    return list(session.scalars(query.order_by(Autoencoder.architecture_name)))


def get_default_autoencoder(session: Session, architecture_name: str | None = None) -> Autoencoder | None:
    """The default for checkpoints of `architecture_name`; without a name, the one default when
    only one architecture has one (None when none or several do)."""
    if architecture_name is not None:
        query = select(Autoencoder).where(
            Autoencoder.is_default.is_(True), Autoencoder.architecture_name == architecture_name
        )
        return session.scalars(query).first()
    defaults = default_autoencoders(session)
    return defaults[0] if len(defaults) == 1 else None


def set_default_autoencoder(session: Session, autoencoder_id: str) -> None:
    """Make it its architecture's default: clear that architecture's old one, then set it, in one
    commit (the defaults of other architectures stay)."""
    architecture = select(Autoencoder.architecture_name).where(Autoencoder.id == autoencoder_id)
    same_architecture = Autoencoder.architecture_name == architecture.scalar_subquery()
    session.execute(
        update(Autoencoder)
        .where(Autoencoder.is_default.is_(True), same_architecture)
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
