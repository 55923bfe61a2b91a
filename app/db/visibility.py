"""Who sees which rows: a key sees its own rows plus shared ones (owner_id NULL). The lookups and
the listings of the routes go through here, so each applies the rule the same way.

The statements polled most (a row by its id) are built once, with the id and the owner as bound
parameters: building a select and deriving its cache key on every request costs more of the
API's CPU than running it (docs/benchmarks.md, "Cheaper job polls").
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, bindparam, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.interfaces import ORMOption

Row = TypeVar("Row")


def visible_to(model: Any, owner_id: str | None) -> ColumnElement[bool]:
    """The WHERE clause of the rows of `model` that `owner_id` (None: no key) may see."""
    if owner_id is None:
        return model.owner_id.is_(None)
    return or_(model.owner_id.is_(None), model.owner_id == owner_id)


def visible_to_bound(model: Any, keyed: bool) -> ColumnElement[bool]:
    """visible_to for a statement built once: the owner is the bound parameter `owner_id`
    (owner_parameters gives it), present only for a caller with a key."""
    if not keyed:
        return model.owner_id.is_(None)
    return or_(model.owner_id.is_(None), model.owner_id == bindparam("owner_id"))


def owner_parameters(owner_id: str | None) -> dict[str, str]:
    """The bound parameters of visible_to_bound(model, keyed=owner_id is not None)."""
    return {} if owner_id is None else {"owner_id": owner_id}


@lru_cache(maxsize=64)
def _row_query(model: Any, keyed: bool) -> Select[Any]:
    return select(model).where(model.id == bindparam("row_id"), visible_to_bound(model, keyed))


def find_visible(
    session: Session, model: type[Row], row_id: str, owner_id: str | None, *options: ORMOption
) -> Row | None:
    """The row of `model` with this id if `owner_id` may see it (`options`: e.g. undefer a column)."""
    query = _row_query(model, owner_id is not None)
    if options:
        query = query.options(*options)
    return session.scalars(query, {"row_id": row_id, **owner_parameters(owner_id)}).first()


def is_visible(session: Session, model: Any, row_id: str, owner_id: str | None) -> bool:
    """Whether that row exists and `owner_id` may see it; reads the id only."""
    query = select(model.id).where(model.id == row_id, visible_to(model, owner_id))
    return session.scalars(query).first() is not None


def visible_page(
    session: Session,
    model: Any,
    owner_id: str | None,
    *filters: ColumnElement[bool],
    limit: int,
    offset: int,
) -> dict[str, Any]:
    """One page of the rows `owner_id` may see that pass `filters`, newest first, with the count of
    all of them: the body of a listing (app.api.schemas.Page)."""
    where = (visible_to(model, owner_id), *filters)
    total = session.scalar(select(func.count()).select_from(model).where(*where)) or 0
    query = select(model).where(*where).order_by(model.created_at.desc(), model.id.desc())
    items = session.scalars(query.limit(limit).offset(offset)).all()
    return {"items": items, "total": total, "limit": limit, "offset": offset}
