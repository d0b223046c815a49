# Runs on CPython (host): /v1/cards/{uid} — the member a card belongs to.
"""Cards: ``GET /v1/cards/{uid}`` (``members.read``) -> the card's member and the card."""

from __future__ import annotations

import sqlite_utils
from fastapi import APIRouter, Depends

from host.store.uid import canonical_uid
from host.store import lookup
from host.web.deps import need, read_db
from host.web.models import CardMemberOut, ErrorOut
from host.web.permissions import Actor

router = APIRouter(prefix="/cards", tags=["cards"],
                   responses={s: {"model": ErrorOut} for s in (400, 401, 403, 404)})


@router.get("/{uid}", response_model=CardMemberOut, summary="The member of a card")
def member_of_card(uid: str, actor: Actor = Depends(need("members.read")),
                   db: sqlite_utils.Database = Depends(read_db)) -> dict:
    return lookup.member_by_card(db, canonical_uid(uid))
