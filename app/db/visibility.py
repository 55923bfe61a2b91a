"""Who sees which rows: a key sees its own rows plus shared ones (owner_id NULL)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, or_


def visible_to(model: Any, owner_id: str | None) -> ColumnElement[bool]:
    """The WHERE clause of the rows of `model` that `owner_id` (None: no key) may see."""
    if owner_id is None:
        return model.owner_id.is_(None)
    return or_(model.owner_id.is_(None), model.owner_id == owner_id)
