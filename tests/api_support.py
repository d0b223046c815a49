# Runs on CPython (pytest): a seeded site behind the /v1 API — real database file, real Writer, tokens per scope.
"""Shared by the ``test_api_*`` modules.

``api_site`` is a site database in ``tmp_path`` with one member (``Li``, phone
:data:`PHONE`, card :data:`UID`, 100.00 topped up), a token per scope (``site.tokens``), the
daemon's real :class:`host.site.writer.Writer` started on it, and an event bus.
``site.client()`` is an in-process client of the API over that site.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastapi.testclient import TestClient

from host.admin import Admin
from host.privacy import keyfile
from host.rules.policy import Policy, load_policy
from host.site.writer import Writer
from host.store.db import open_db
from host.store.readonly import readonly_factory
from host.store.tokens import SCOPES, add_token
from host.web.app import create_app
from host.web.context import WebContext
from host.web.events import EventBus

UID = "04A1B2C3D4E5F6"
PHONE = "138 0013 8000"


@dataclass
class ApiSite:
    path: Path
    member_id: int
    policy: Policy
    writer: Writer
    bus: EventBus
    tokens: dict[str, str] = field(default_factory=dict)

    def context(self) -> WebContext:
        return WebContext(writer=self.writer, read_db=readonly_factory(self.path),
                          policy=self.policy, bus=self.bus)

    def client(self) -> TestClient:
        return TestClient(create_app(self.context()), raise_server_exceptions=False)

    def auth(self, scope: str, key: str | None = None) -> dict[str, str]:
        """Headers of a request made with the ``scope`` token (and an Idempotency-Key)."""
        h = {"Authorization": f"Bearer {self.tokens[scope]}"}
        if key is not None:
            h["Idempotency-Key"] = key
        return h

    def principal_fen(self) -> int:
        """The member's principal, read from the ledger's projection on a fresh connection."""
        db = open_db(self.path)
        try:
            return db.execute("SELECT principal_fen FROM members WHERE id = ?",
                              [self.member_id]).fetchone()[0]
        finally:
            db.conn.close()


def seed(path: Path) -> tuple[int, dict[str, str]]:
    """The member and one token per scope, written before the writer starts."""
    db = open_db(path)
    keyfile.create(f"{path}.key")
    try:
        admin = Admin(db, load_policy())
        mid = admin.add_member("Li", phone=PHONE, consent_terms="t1")["member_id"]
        admin.enroll_card(mid, UID)
        admin.topup(mid, 10000)
        tokens = {scope: add_token(db, f"test-{scope}", scope)[1] for scope in SCOPES}
    finally:
        db.conn.close()
    return mid, tokens

