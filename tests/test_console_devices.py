# Runs on CPython (pytest): the technician's device actions in the console — settings, config push, key rotation.
"""The device page's forms over an in-process client of the real application (real database,
Writer and, for pushes, the daemon's real frame service): every action needs the technician's
role on the server and a CSRF token, writes one audit row with the device's settings before
and after (never a key), and is applied once when its form is posted twice; a bad setting is
one line on the page and changes nothing."""

from __future__ import annotations

import json
import re

import pytest

from host.admin import Admin
from host.store.db import open_db
from host.store.devices import device_key, get_device
from protocol import packet as pk
from console_support import UID, ConsoleSite

FORM_RE = re.compile(r'action="/console/devices/([^/"]+)/(\w+)"[^>]*>\s*'
                     r'<input type="hidden" name="csrf_token" value="([0-9a-f]+)">'
                     r'<input type="hidden" name="key" value="([A-Za-z0-9_-]+)">')


def _forms(page: str) -> dict[tuple[str, str], dict[str, str]]:
    """(device, action) -> the hidden fields of that form on the page."""
    return {(m[1], m[2]): {"csrf_token": m[3], "key": m[4]} for m in FORM_RE.finditer(page)}


def _settings(site: ConsoleSite, device_id: str) -> dict:
    db = open_db(site.path)
    try:
        return get_device(db, device_id)["settings"]
    finally:
        db.conn.close()


def _audit(site: ConsoleSite, action: str) -> list[tuple]:
    db = open_db(site.path)
    try:
        return db.execute("SELECT actor, device_id, before, after FROM audit_log "
                          "WHERE action = ? ORDER BY id", [action]).fetchall()
    finally:
        db.conn.close()


@pytest.fixture
def tech(console_site: ConsoleSite):
    console_site.devices()
    c = console_site.client()
    console_site.login(c, "tom")
    return c


def test_settings_edited_once_and_audited(console_site: ConsoleSite, tech) -> None:
    form = _forms(tech.get("/console/devices").text)[("gate-1", "settings")]
    data = {**form, "name": "North gate", "hours": "06:00-22:00", "duplicate_window_s": "8",
            "direction": "in", "anti_passback": "off"}
    for _ in range(2):      # a double-submitted form
        r = tech.post("/console/devices/gate-1/settings", data=data)
        assert r.status_code == 303 and r.headers["location"].startswith("/console/devices")
    assert _settings(console_site, "gate-1") == {
        "name": "North gate", "hours": "06:00-22:00", "duplicate_window_s": 8,
        "direction": "in", "anti_passback": False}
    rows = _audit(console_site, "device.set")
    assert len(rows) == 1
    actor, device, before, after = rows[0]
    assert (actor, device) == ("tom", "gate-1")
    assert json.loads(before)["device"]["settings"]["name"] == "Front gate"
    assert json.loads(after)["settings"]["anti_passback"] is False
    page = tech.get(r.headers["location"]).text
    assert 'id="notice"' in page and 'value="North gate"' in page


def test_kiosk_fixed_price_switch(console_site: ConsoleSite, tech) -> None:
    form = _forms(tech.get("/console/devices").text)[("kiosk-3", "settings")]
    r = tech.post("/console/devices/kiosk-3/settings", data={**form, "fixed_price": "off"})
    assert r.status_code == 303
    assert _settings(console_site, "kiosk-3")["fixed_price"] is False


@pytest.mark.parametrize("field, value, message", [
    ("hours", "25:00-26:00", "bad opening hours '25:00-26:00': use HH:MM-HH:MM"),
    ("duplicate_window_s", "9000", "duplicate_window_s must be an integer 0..3600, got 9000"),
    ("duplicate_window_s", "soon", "duplicate_window_s must be an integer 0..3600, got 'soon'"),
    ("direction", "up", "direction must be in|out|both, got 'up'"),
    ("anti_passback", "maybe", "anti_passback must be on or off, got 'maybe'"),
])
def test_bad_setting_is_one_line_and_changes_nothing(console_site: ConsoleSite, tech,
                                                     field: str, value: str,
                                                     message: str) -> None:
    before = _settings(console_site, "gate-1")
    form = _forms(tech.get("/console/devices?lang=en").text)[("gate-1", "settings")]
    r = tech.post("/console/devices/gate-1/settings",
                  data={**form, "name": "Renamed", field: value})
    assert r.status_code == 400
    error = re.search(r'<p class="error" id="error">([^<]*)</p>', r.text)
    assert error and message in error.group(1).replace("&#39;", "'")
    assert error.group(1).startswith("gate-1: ")
    assert _settings(console_site, "gate-1") == before
    assert _audit(console_site, "device.set") == []


def test_a_setting_of_another_kind_is_refused(console_site: ConsoleSite, tech) -> None:
    form = _forms(tech.get("/console/devices").text)[("wash-2", "settings")]
    r = tech.post("/console/devices/wash-2/settings", data={**form, "fixed_price": "on"})
    assert r.status_code == 400 and "fixed_price" in r.text
    assert "fixed_price" not in _settings(console_site, "wash-2")


def test_the_cli_gives_the_same_errors(site_cli) -> None:
    code, _, err = site_cli("device", "add", "G1", "gate", "--hours", "25:00-26:00")
    assert code == 2 and "bad opening hours '25:00-26:00': use HH:MM-HH:MM" in err


def test_rotate_key_shown_once_never_audited(console_site: ConsoleSite, tech) -> None:
    db = open_db(console_site.path)
    old = device_key(db, "wash-2")
    db.conn.close()
    form = _forms(tech.get("/console/devices").text)[("wash-2", "key")]
    first = tech.post("/console/devices/wash-2/key", data=form)
    assert first.status_code == 200
    shown = re.search(r'id="new-key" class="key">([0-9a-f]{64})<', first.text).group(1)
    assert "tools/flash.py provision --app-only" in first.text
    db = open_db(console_site.path)
    new = device_key(db, "wash-2")
    db.conn.close()
    assert new != old and shown == new.hex()
    again = tech.post("/console/devices/wash-2/key", data=form)   # the form posted twice
    assert again.status_code == 200 and 'id="replayed"' in again.text
    assert shown not in again.text
    db = open_db(console_site.path)
    assert device_key(db, "wash-2") == new
    dump = "\n".join(db.conn.iterdump())
    db.conn.close()
    rows = _audit(console_site, "device.key.rotate")
    assert [(r[0], r[1]) for r in rows] == [("tom", "wash-2")]
    assert dump.lower().count(shown) == 1   # the devices row's key column, nowhere else
    assert shown not in json.dumps(rows)


def test_push_sends_the_allow_list_once(console_site: ConsoleSite, tech) -> None:
    db = open_db(console_site.path)
    Admin(db, console_site.policy).sell_pass(console_site.member_id, "gym_month")
    db.conn.close()
    with console_site.connected("gate-1") as (svc, sent):
        c = console_site.client(console_site.app(readers=svc))
        console_site.login(c, "tom")
        form = _forms(c.get("/console/devices").text)[("gate-1", "push")]
        r = c.post("/console/devices/gate-1/push", data=form)
        assert r.status_code == 200 and 'id="cfg-version"' in r.text
        assert re.search(r'id="cards">1<', r.text)
        frames = [pk.decode(raw, svc.device("gate-1").mac, pk.DOWN) for raw in sent]
        assert [f.type for f in frames] == [pk.CONFIG]
        assert frames[0].fields["allow"] == [bytes.fromhex(UID)]
        again = c.post("/console/devices/gate-1/push", data=form)      # posted twice
        assert again.status_code == 200 and 'id="replayed"' in again.text
        assert len(sent) == 1
        fresh = _forms(c.get("/console/devices").text)[("gate-1", "push")]
        assert c.post("/console/devices/gate-1/push", data=fresh).status_code == 200
        later = pk.decode(sent[-1], svc.device("gate-1").mac, pk.DOWN)
        assert later.fields["cfg_version"] > frames[0].fields["cfg_version"]  # applied again
    rows = _audit(console_site, "device.config.push")
    assert len(rows) == 2 and rows[0][:2] == ("tom", "gate-1")
    assert json.loads(rows[0][3])["cards"] == 1


def test_push_to_an_offline_reader_is_refused_and_not_recorded(console_site: ConsoleSite,
                                                               tech) -> None:
    with console_site.connected("gate-1") as (svc, sent):
        svc.set_online(svc.device("gate-1"), False)
        c = console_site.client(console_site.app(readers=svc))
        console_site.login(c, "tom")
        form = _forms(c.get("/console/devices").text)[("gate-1", "push")]
        r = c.post("/console/devices/gate-1/push", data=form)
        assert r.status_code == 409 and "offline" in r.text and sent == []
    assert _audit(console_site, "device.config.push") == []
    # Without the daemon's links (an API server alone) a push is 503.
    form = _forms(tech.get("/console/devices").text)[("gate-1", "push")]
    assert tech.post("/console/devices/gate-1/push", data=form).status_code == 503


@pytest.mark.parametrize("action", ["settings", "push", "key"])
@pytest.mark.parametrize("who", ["alice", "bob"])
def test_other_roles_posting_directly_get_403(console_site: ConsoleSite, tech, action: str,
                                              who: str) -> None:
    form = _forms(tech.get("/console/devices").text)[("gate-1", action)]
    other = console_site.client()
    token = console_site.login(other, who)
    r = other.post(f"/console/devices/gate-1/{action}",
                   data={"key": form["key"], "csrf_token": token, "name": "x"})
    assert r.status_code == 403
    assert _settings(console_site, "gate-1")["name"] == "Front gate"
    assert console_site.db_value("SELECT count(*) FROM audit_log WHERE action LIKE 'device.%'"
                                 )[0] == 0


@pytest.mark.parametrize("action", ["settings", "push", "key"])
def test_missing_csrf_is_403(console_site: ConsoleSite, tech, action: str) -> None:
    db = open_db(console_site.path)
    old = device_key(db, "gate-1")
    db.conn.close()
    form = _forms(tech.get("/console/devices").text)[("gate-1", action)]
    for token in (None, "0" * 64):
        data = {"key": form["key"], "name": "x"}
        if token:
            data["csrf_token"] = token
        assert tech.post(f"/console/devices/gate-1/{action}", data=data).status_code == 403
    db = open_db(console_site.path)
    assert device_key(db, "gate-1") == old
    db.conn.close()
    assert _settings(console_site, "gate-1")["name"] == "Front gate"


def test_the_cli_makes_the_same_audited_writes(site_cli) -> None:
    """``device add`` on a registered reader and ``device key --rotate`` are the console's
    admin writes: audited as ``cli:<user>``, the settings before and after, never the key."""
    assert site_cli("device", "add", "G1", "gate", "--name", "North")[0] == 0
    assert site_cli("device", "add", "G1", "gate", "--hours", "06:00-22:00")[0] == 0
    code, out, _ = site_cli("--json", "device", "key", "G1", "--rotate", "--show")
    assert code == 0
    key = json.loads(out)["key"]
    db = open_db(site_cli.db)
    try:
        assert device_key(db, "G1").hex() == key
        assert get_device(db, "G1")["settings"]["name"] == "North"   # kept by the 2nd add
        rows = db.execute("SELECT actor, action, device_id, before, after FROM audit_log "
                          "WHERE device_id = 'G1' ORDER BY id").fetchall()
    finally:
        db.conn.close()
    assert [r[1] for r in rows] == ["device.set", "device.key.rotate"]
    assert all(r[0].startswith("cli:") for r in rows)
    assert json.loads(rows[0][3])["device"]["settings"]["hours"] == "00:00-24:00"
    assert json.loads(rows[0][4])["settings"]["hours"] == "06:00-22:00"
    assert key not in json.dumps(rows)
