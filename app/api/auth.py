"""Who is asking: the owner behind a bearer key, or nobody (embedded mode, shared rows only).

With ZOOSCOPE_AUTH_REQUIRED every request needs `Authorization: Bearer <key>`. Without it a
request may still carry a key (it then acts as that key's owner); one without a key sees and
creates shared rows. A key that is present is always checked: a wrong key is never ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.api.problems import Problem
from app.db.owners import owner_for_key

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="zooscope"'}


@dataclass(frozen=True)
class Principal:
    owner_id: str | None  # None: no key; sees shared rows and creates shared rows
    owner_name: str | None = None


ANONYMOUS = Principal(owner_id=None)


def authenticate(session: Session, authorization: str | None, auth_required: bool) -> Principal:
    if not authorization:
        if auth_required:
            raise Problem(
                401,
                "this service needs an API key: send 'Authorization: Bearer <key>' "
                "(an administrator creates one with `zooscope keys create --name NAME`)",
                type_="unauthorized",
                headers=CHALLENGE,
            )
        return ANONYMOUS
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Problem(
            401,
            "malformed Authorization header: expected 'Bearer <key>'",
            type_="unauthorized",
            headers=CHALLENGE,
        )
    owner = owner_for_key(session, key.strip())
    if owner is None:
        raise Problem(401, "unknown or revoked API key", type_="unauthorized", headers=CHALLENGE)
    return Principal(owner_id=owner.id, owner_name=owner.name)
