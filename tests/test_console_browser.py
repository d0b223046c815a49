# Runs on CPython (pytest): Debian's chromium, driven by Playwright, through the console on the real WebServer.
"""The front-desk walk-through in a real browser against the daemon's real web server
(uvicorn, the /v1 app with the console mounted at /console), real Writer and event bus:
login; find a member by search and by a card tap on the live feed; top up twice with the same
receipt number (credited once); sell a pass; a cashier's refund is refused (403, posted
directly); a manager refunds; a tap published on the bus shows on the dashboard; the audit
log names the staff. A technician edits a reader's setting (a bad value first: one line,
nothing changed), pushes a gate's allow-list through the daemon's frame service and rotates a
key (shown once; the same form posted again changes nothing). Screenshots go to
``tests/artefacts/console/``.

Skipped only when no chromium binary is installed (``make test`` installs it with apt-get).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import wait_until
from host.site.service import Service
from host.store.db import open_db
from host.store.devices import device_key, get_device
from host.store.readonly import readonly_factory
from host.web.config import HttpConfig
from host.web.server import WebServer
from protocol import packet as pk
from console_support import PASSWORD, UID, ConsoleSite

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTEFACTS = Path(__file__).parent / "artefacts" / "console"

pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="chromium is not installed (apt-get install chromium)")


@pytest.fixture
def readers(console_site: ConsoleSite) -> Iterator[tuple[Service, list[bytes]]]:
    """The site's readers registered; the daemon's frame service with gate-1 connected."""
    console_site.devices()
    with console_site.connected("gate-1") as connected:
        yield connected


@pytest.fixture
def server(console_site: ConsoleSite, readers) -> Iterator[WebServer]:
    srv = WebServer(HttpConfig(port=0), writer=console_site.writer,
                    read_db=readonly_factory(console_site.path), policy=console_site.policy,
                    bus=console_site.bus, readers=readers[0]).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _login(page, base: str, name: str) -> None:
    page.goto(f"{base}/console/login?lang=en")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_selector("#logout")


def _topup(page, base: str, member_id: int, receipt: str, amount: str):
    page.goto(f"{base}/console/members/{member_id}")
    page.fill("#topup-form input[name=receipt]", receipt)
    page.fill("#topup-form input[name=amount]", amount)
    page.click("#topup-form button")
    page.wait_for_selector("#receipt")


def _principal(site: ConsoleSite) -> int:
    return site.db_value("SELECT principal_fen FROM members WHERE id = ?", [site.member_id])[0]


def test_front_desk_walkthrough(console_site: ConsoleSite, server: WebServer, browser) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    base, mid, bus = server.url, console_site.member_id, console_site.bus
    cashier = browser.new_page(viewport={"width": 1280, "height": 900})
    _login(cashier, base, "alice")

    # Find the member by search...
    cashier.goto(f"{base}/console/members")
    cashier.fill("input[name=q]", "8000")  # the last 4 digits of the phone
    cashier.click("#search")
    cashier.click("#results a.member-link")
    assert cashier.inner_text("#member-name").startswith("L*")  # the masked name
    # ...and by a card tap at the counter reader, from the live feed.
    cashier.goto(f"{base}/console/")
    cashier.wait_for_selector("#feed[data-ready='1']", state="attached")
    bus.publish("decision", {"device_id": "counter", "seq": 1, "uid": UID, "member_id": mid,
                             "verdict": "grant", "reason": "ok", "text": "Li",
                             "balance_fen": 10000, "points": 0, "uses_left": 0,
                             "replayed": False})
    cashier.click("#feed li.decision a")
    cashier.wait_for_selector("#member-name")
    assert cashier.url.endswith(f"/console/members/{mid}")

    # Top up twice with the same receipt number: credited once.
    _topup(cashier, base, mid, "R-1001", "50.00")
    assert cashier.inner_text("#amount") == "50.00" and not cashier.query_selector("#replayed")
    _topup(cashier, base, mid, "R-1001", "50.00")
    assert cashier.query_selector("#replayed") is not None
    assert _principal(console_site) == 15000

    # Sell a pass (cash at the counter).
    cashier.goto(f"{base}/console/members/{mid}")
    cashier.select_option("#pass-form select[name=plan]", "wash10")
    cashier.click("#pass-form button")
    cashier.wait_for_selector("#receipt")
    assert cashier.inner_text("#plan") == "wash10"

    # A cashier sees no refund form, and a refund posted directly is refused by the server.
    cashier.goto(f"{base}/console/members/{mid}")
    assert cashier.query_selector("#refund-form") is None
    token = cashier.get_attribute("#topup-form input[name=csrf_token]", "value")
    refused = cashier.request.post(f"{base}/console/members/{mid}/refund", form={
        "amount": "10.00", "key": "direct-refund-1", "csrf_token": token})
    assert refused.status == 403
    assert _principal(console_site) == 15000

    # A manager refunds.
    manager = browser.new_page(viewport={"width": 1280, "height": 900})
    _login(manager, base, "bob")
    manager.goto(f"{base}/console/members/{mid}")
    manager.fill("#refund-form input[name=amount]", "20.00")
    manager.click("#refund-form button")
    manager.wait_for_selector("#receipt")
    assert manager.inner_text("#amount") == "20.00"
    assert _principal(console_site) == 13000
    manager.goto(f"{base}/console/members/{mid}")
    manager.screenshot(path=str(ARTEFACTS / "member.png"), full_page=True)

    # A tap published on the bus shows on the dashboard's feed (2 s at most).
    manager.goto(f"{base}/console/")
    manager.wait_for_selector("#feed[data-ready='1']", state="attached")
    bus.publish("tap", {"device_id": "gate-1", "seq": 7, "uid": "04CAFE0000BEEF",
                        "service": 0, "amount_fen": 0, "direction": "in", "offline": False})
    wait_until(lambda: "04CAFE0000BEEF" in manager.inner_text("#feed"), 2,
               what="the tap on the dashboard feed")
    assert "1.4.2" in manager.inner_text("#board")
    manager.screenshot(path=str(ARTEFACTS / "dashboard.png"), full_page=True)

    # Reports, with their charts.
    manager.goto(f"{base}/console/reports")
    for chart in ("chart-revenue", "chart-hours", "chart-rates"):
        assert manager.query_selector(f"svg#{chart} rect") is not None, chart
    manager.screenshot(path=str(ARTEFACTS / "reports.png"), full_page=True)

    # The audit log lists these actions with the staff names.
    manager.goto(f"{base}/console/audit")
    rows = [(r.query_selector(".actor").inner_text(), r.query_selector(".action").inner_text())
            for r in manager.query_selector_all("tr.audit-row")]
    assert rows.count(("alice", "topup")) == 1
    assert ("alice", "pass.sell") in rows and ("bob", "refund") in rows
    assert not any(action == "refund" and who == "alice" for who, action in rows)
    manager.screenshot(path=str(ARTEFACTS / "audit.png"), full_page=True)


def test_technician_devices(console_site: ConsoleSite, server: WebServer, readers,
                            browser) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    base, (svc, sent) = server.url, readers
    tech = browser.new_page(viewport={"width": 1280, "height": 900})
    _login(tech, base, "tom")
    tech.goto(f"{base}/console/devices")
    gate = "#device-gate-1 "

    # A bad value: one line on the page, nothing changed.
    tech.fill(gate + "input[name=hours]", "25:00-26:00")
    tech.click(gate + ".settings-form button")
    assert "bad opening hours" in tech.inner_text("#error")
    assert _device(console_site, "gate-1")["hours"] == "00:00-24:00"

    # A setting edited.
    tech.fill(gate + "input[name=hours]", "06:00-22:00")
    tech.select_option(gate + "select[name=direction]", "in")
    tech.click(gate + ".settings-form button")
    tech.wait_for_selector("#notice")
    settings = _device(console_site, "gate-1")
    assert (settings["hours"], settings["direction"]) == ("06:00-22:00", "in")

    # The allow-list pushed to the connected gate by the daemon.
    tech.click(gate + ".push-form button")
    tech.wait_for_selector("#cfg-version")
    assert [pk.decode(raw, svc.device("gate-1").mac, pk.DOWN).type for raw in sent] == \
        [pk.CONFIG]
    tech.screenshot(path=str(ARTEFACTS / "devices.png"), full_page=True)

    # A key rotated: shown once; the same form posted again (a double submit) changes nothing.
    tech.goto(f"{base}/console/devices")
    token = tech.get_attribute("#device-wash-2 .key-form input[name=csrf_token]", "value")
    form_key = tech.get_attribute("#device-wash-2 .key-form input[name=key]", "value")
    tech.click("#device-wash-2 .key-form button")
    shown = tech.inner_text("#new-key")
    assert shown == _key(console_site, "wash-2").hex()
    again = tech.request.post(f"{base}/console/devices/wash-2/key",
                              form={"csrf_token": token, "key": form_key})
    assert again.status == 200 and shown not in again.text()
    assert _key(console_site, "wash-2").hex() == shown

    # A cashier posting the same forms directly is refused by the server.
    cashier = browser.new_page()
    _login(cashier, base, "alice")
    cashier.goto(f"{base}/console/")
    token = cashier.get_attribute("header form input[name=csrf_token]", "value")
    for action in ("settings", "push", "key"):
        r = cashier.request.post(f"{base}/console/devices/gate-1/{action}",
                                 form={"csrf_token": token, "key": "cashier-form-1",
                                       "hours": "01:00-02:00"})
        assert r.status == 403, action
    assert _device(console_site, "gate-1")["hours"] == "06:00-22:00" and len(sent) == 1


def _device(site: ConsoleSite, device_id: str) -> dict:
    db = open_db(site.path)
    try:
        return get_device(db, device_id)["settings"]
    finally:
        db.conn.close()


def _key(site: ConsoleSite, device_id: str) -> bytes:
    db = open_db(site.path)
    try:
        return device_key(db, device_id)
    finally:
        db.conn.close()
