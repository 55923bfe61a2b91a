"""Owners and their API keys. A key is shown once; only its sha256 is stored."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import ApiKey, Owner
from app.db.types import utcnow

KEY_PREFIX = "zs_"  # makes a leaked key recognisable in logs and secret scanners
# NOTIFY'd by a trigger when a key is revoked or deleted (migrations/versions/0005_change_notifications.py)
KEY_CHANGED_CHANNEL = "zooscope_key_changed"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_owner(session: Session, name: str) -> Owner:
    owner = session.scalars(select(Owner).where(Owner.name == name)).first()
    if owner is None:
        owner = Owner(name=name)
        session.add(owner)
        session.commit()
    return owner


def create_key(session: Session, owner_name: str) -> tuple[ApiKey, str]:
    """A new key for `owner_name` (created if new). Returns (row, the key in clear)."""
    owner = get_or_create_owner(session, owner_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(owner_id=owner.id, key_hash=hash_key(key), prefix=key[:10])
    session.add(row)
    session.commit()
    return row, key


def owner_for_key(session: Session, key: str) -> Owner | None:
    """The owner of an active key, or None for an unknown or revoked one."""
    row = session.scalars(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    return session.get(Owner, row.owner_id)


def list_keys(session: Session) -> list[tuple[ApiKey, Owner]]:
    rows = session.execute(select(ApiKey, Owner).join(Owner).order_by(ApiKey.created_at)).all()
    return [(k, o) for k, o in rows]


def revoke_key(session: Session, key_id_or_prefix: str) -> ApiKey | None:
    """Revoke by id or by the prefix `keys list` shows."""
    row = (
        session.get(ApiKey, key_id_or_prefix)
        or session.scalars(select(ApiKey).where(ApiKey.prefix == key_id_or_prefix)).first()
    )
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return row
