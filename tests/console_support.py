# Runs on CPython (pytest): a seeded site behind the staff console — staff per role, real Writer, clients.
"""Shared by the ``test_console_*`` modules.

``console_site``: a site database in ``tmp_path`` with one member (``Li``, phone
:data:`PHONE`, card :data:`UID`, 100.00 topped up), a staff account per role
(:data:`STAFF`, password :data:`PASSWORD`), the daemon's real Writer, an event bus and a
settable monotonic clock for sessions and lockouts. ``site.client()`` is an in-process
client of the daemon's whole web application (``/v1`` and ``/console``);
``site.login(client, name)`` logs it in and returns the page's CSRF token; ``site.devices()``
registers a few readers and ``site.connected(id)`` gives the daemon's frame service with one
of them connected (the frames it is sent in a list).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from host.admin import Admin
from host.privacy import keyfile
from host.rules.policy import Policy, load_policy
from host.site.metrics import Metrics
from host.site.service import Service
from host.site.writer import Writer
from host.store import staff
from host.store.db import open_db
from host.store.devices import register_device, touch_device
from host.store.readonly import readonly_factory
from host.web.console import create_console
from host.web.console.core import ConsoleConfig
from host.web.context import WebContext
from host.web.events import EventBus

UID = "04A1B2C3D4E5F6"
PHONE = "138 0013 8000"
PASSWORD = "correct horse"
STAFF = {"alice": "cashier", "bob": "manager", "tom": "technician"}
RAISE = False
#: Readers ``site.devices()`` registers: id -> (kind, settings).
DEVICES = {"gate-1": ("gate", {"name": "Front gate"}), "wash-2": ("wash", {}),
           "kiosk-3": ("kiosk", {})}
CSRF_RE = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class ConsoleSite:
    path: Path
    member_id: int
    policy: Policy
    writer: Writer
    bus: EventBus
    clock: Clock

    def context(self, readers: Service | None = None) -> WebContext:
        return WebContext(writer=self.writer, read_db=readonly_factory(self.path),
                          policy=self.policy, bus=self.bus, readers=readers)

    def app(self, readers: Service | None = None, **config) -> FastAPI:
        """The daemon's whole application with the console mounted at /console
        (``readers``: the daemon's frame service, for pushes to connected readers)."""
        outer = FastAPI()
        outer.mount("/console", create_console(
            self.context(readers), ConsoleConfig(clock=self.clock, **config)))
        return outer

    def client(self, app: FastAPI | None = None, **config) -> TestClient:
        """A client (a browser) of ``app``, by default of a new application."""
        return TestClient(app or self.app(**config), raise_server_exceptions=RAISE,
                          follow_redirects=False)

    def login(self, client: TestClient, name: str, password: str = PASSWORD) -> str:
        """Log ``client`` in as ``name``; returns the CSRF token of its pages."""
        token = csrf_of(client.get("/console/login").text)
        r = client.post("/console/login", data={"name": name, "password": password,
                                                "csrf_token": token})
        assert r.status_code == 303, r.text
        return token

    def devices(self) -> None:
        """Register the readers of :data:`DEVICES` (gate-1 online, firmware 1.4.2)."""
        db = open_db(self.path)
        try:
            for device_id, (kind, settings) in DEVICES.items():
                register_device(db, device_id, kind, **settings)
            touch_device(db, "gate-1", online=1, fw="1.4.2", last_seen=1_764_560_000)
        finally:
            db.conn.close()

    @contextmanager
    def connected(self, device_id: str) -> Iterator[tuple[Service, list[bytes]]]:
        """The daemon's real frame service on this site's writer, with ``device_id`` connected:
        yields the service and the list of frames sent to the reader."""
        svc = Service(self.writer, Metrics(), self.policy)
        sent: list[bytes] = []
        try:
            st = svc.device(device_id)
            assert st is not None
            st.send = sent.append
            svc.set_online(st, True)
            yield svc, sent
        finally:
            svc.close()

    def db_value(self, sql: str, params: list | None = None):
        db = open_db(self.path)
        try:
            return db.execute(sql, params or []).fetchone()
        finally:
            db.conn.close()


def csrf_of(page: str) -> str:
    m = CSRF_RE.search(page)
    assert m, "the page has no CSRF token"
    return m.group(1)


def seed(path: Path) -> int:
    db = open_db(path)
    keyfile.create(f"{path}.key")  # what `tapkiosk init` makes
    try:
        admin = Admin(db, load_policy())
        mid = admin.add_member("Li", phone=PHONE, consent_terms="t1")["member_id"]
        admin.enroll_card(mid, UID)
        admin.topup(mid, 10000)
        for name, role in STAFF.items():
            staff.add_staff(db, name, role, PASSWORD, actor="cli:test")
    finally:
        db.conn.close()
    return mid

