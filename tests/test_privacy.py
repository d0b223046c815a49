# Runs on CPython (pytest): member personal data — sealed at rest, masked, found by phone, exported, erased, rotated.
"""Issue #15: no name, phone or birthday in the database file, its WAL or a site export; phone
look-ups through the blind index (CLI; the API in test_api_members.py); erasure keeps the
books; rotation keeps every member readable; file modes; a bad data key is one line."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from host.admin import Admin
from host.cli.app import main
from host.ledger.book import verify
from host.privacy import keyfile, upgrade
from host.privacy.mask import mask_name, mask_phone, normalise_phone
from host.rules.engine import Engine, Tap
from host.rules.policy import load_policy
from host.store import lookup, reports
from host.store.db import open_db
from host.store.devices import register_device

UID = "04A1B2C3D4E5F6"
NAME, PHONE, BDAY, NOTE = "李雷雷", "13812345678", "07-19", "allergic to wax"
NAME2, PHONE2 = "Zhang Wei", "13987654321"
#: What must never be found in clear: names, phones, the birthday, the note.
SECRETS = [NAME, PHONE, NAME2, PHONE2, "07-19", NOTE, "Zhang"]


@pytest.fixture
def cli(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TAPKIOSK_DB", raising=False)
    monkeypatch.delenv(keyfile.ENV, raising=False)
    db = str(tmp_path / "site.db")

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["--db", db, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    run.db = db
    assert run("init")[0] == 0
    return run


@pytest.fixture
def any_cli(db_url, capsys, monkeypatch):
    """Like ``cli`` on the backend of the run (``db_url``): a SQLite file with its key beside
    it, or a PostgreSQL database with the key file in TAPKIOSK_DATA_KEY_FILE."""
    monkeypatch.delenv("TAPKIOSK_DB", raising=False)
    pg = db_url.startswith("postgresql://")
    if not pg:
        monkeypatch.delenv(keyfile.ENV, raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["--db", db_url, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    run.db = db_url
    run.key = os.environ[keyfile.ENV] if pg else db_url + ".key"
    assert run("init")[0] == 0
    return run


def jrun(cli, *argv: str):
    code, out, err = cli("--json", *argv)
    assert code == 0, err
    return json.loads(out)


def _add_two(cli) -> None:
    jrun(cli, "member", "add", "--name", NAME, "--phone", "+86 138-1234-5678", "--birthday",
         "1990-" + BDAY, "--note", NOTE, "--consent-terms", "2026-01")
    jrun(cli, "member", "add", "--name", NAME2, "--phone", PHONE2, "--consent-terms", "2026-01")


def _found(data: bytes) -> list[str]:
    return [s for s in SECRETS if s.encode() in data]


def test_no_personal_data_in_database_wal_or_site_export(cli, tmp_path):
    keep_wal = open_db(cli.db)  # a second connection keeps the WAL from being checkpointed away
    try:
        _add_two(cli)
        jrun(cli, "member", "edit", "2", "--birthday", BDAY)
        jrun(cli, "export", "--out", str(tmp_path / "site.json"))
        wal = Path(cli.db + "-wal").read_bytes()
        assert len(wal) > 0
        assert _found(wal) == []
        assert _found(Path(cli.db).read_bytes()) == []
        export = (tmp_path / "site.json").read_bytes()
        assert _found(export) == []
        members = json.loads(export)["members"]
        assert [(m["name"], m["phone"]) for m in members] == [("李*", "138****5678"),
                                                              ("Z*", "139****4321")]
        # The rules still get the birth month, in clear and nothing more.
        assert [m["birth_month"] for m in members] == [7, 7]
    finally:
        keep_wal.conn.close()


def test_reveal_and_exports_with_personal_data_are_0600_and_logged(cli, tmp_path):
    _add_two(cli)
    shown = jrun(cli, "member", "show", "1")
    assert (shown["name"], shown["phone"]) == ("李*", "138****5678") and "birthday" not in shown
    full = jrun(cli, "member", "show", "1", "--reveal")
    assert (full["name"], full["phone"], full["birthday"], full["note"]) == \
        (NAME, PHONE, BDAY, NOTE)
    out = tmp_path / "m1.json"
    jrun(cli, "member", "export", "1", "--out", str(out))
    data = json.loads(out.read_text())
    assert data["profile"]["name"] == NAME and data["account"]["consent_terms"] == "2026-01"
    everything = tmp_path / "all.json"
    jrun(cli, "export", "--include-personal", "--out", str(everything))
    assert [m["phone"] for m in json.loads(everything.read_text())["members_personal"]] == \
        [PHONE, PHONE2]
    for f in (out, everything, Path(cli.db + ".key")):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name
    reveals = open_db(cli.db).execute("SELECT actor, member_id, after FROM audit_log WHERE "
                                      "action = 'member.reveal' ORDER BY id").fetchall()
    assert [(m, json.loads(a)["shown"]) for _, m, a in reveals] == \
        [(1, "profile"), (1, "export"), (1, "site export"), (2, "site export")]
    assert all(actor.startswith("cli:") for actor, _, _ in reveals)
    audit_text = open_db(cli.db).execute("SELECT group_concat(coalesce(before, '') || "
                                         "coalesce(after, '')) FROM audit_log").fetchone()[0]
    assert _found(audit_text.encode()) == []  # the audit log never holds the values
    listed = jrun(cli, "member", "list")
    assert [(m["name"], m["phone"]) for m in listed] == [("李*", "138****5678"),
                                                         ("Z*", "139****4321")]


def test_phone_lookup_validation_uniqueness_and_consent(cli):
    _add_two(cli)
    for typed in (PHONE, "+86 138 1234 5678", "0086-138-1234-5678"):
        assert jrun(cli, "member", "show", "--phone", typed)["id"] == 1
    assert jrun(cli, "member", "show", "--phone", PHONE2)["id"] == 2
    refused = [
        (["member", "add", "--phone", PHONE, "--consent-terms", "v"], "already belongs"),
        (["member", "add", "--phone", "12345678901", "--consent-terms", "v"], "mainland mobile"),
        (["member", "add", "--phone", "1381234567", "--consent-terms", "v"], "mainland mobile"),
        (["member", "add", "--name", "No Consent"], "consent"),
        (["member", "show", "--phone", "13800000000"], "no member with phone 138****0000"),
        (["member", "edit", "2", "--phone", PHONE], "already belongs"),
    ]
    for argv, why in refused:
        code, out, err = cli(*argv)
        assert code == 2 and why in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert len(jrun(cli, "member", "list")) == 2
    jrun(cli, "member", "edit", "1", "--phone", "13700000001")
    assert jrun(cli, "member", "show", "--phone", "13700000001")["id"] == 1
    assert cli("member", "show", "--phone", PHONE)[0] == 2


def _site_with_taps(path: str):
    db = open_db(path)
    keyfile.create(path + ".key")
    clock = lambda: datetime(2026, 7, 10, 12, 0, tzinfo=load_policy().tz)  # noqa: E731
    admin = Admin(db, load_policy(), clock)
    mid = admin.add_member(NAME, phone=PHONE, birthday=BDAY, consent_terms="v1")["member_id"]
    admin.enroll_card(mid, UID)
    admin.topup(mid, 20000)
    register_device(db, "K1", "kiosk")
    engine = Engine(db, load_policy(), clock)
    for seq in (1, 2):
        assert engine.decide(Tap("K1", seq, UID, amount_fen=1000)).verdict == "grant"
    return db, admin, engine, mid


def test_taps_earn_the_birthday_month_multiplier_without_the_key(tmp_path):
    db, admin, engine, mid = _site_with_taps(str(tmp_path / "site.db"))
    other = admin.add_member("", consent_terms="v1")["member_id"]  # no birthday
    admin.enroll_card(other, "04A1B2C3D4E5F7")
    admin.topup(other, 20000)
    os.unlink(tmp_path / "site.db.key")  # taps never decrypt anything
    assert engine.decide(Tap("K1", 3, UID, amount_fen=1000)).verdict == "grant"
    assert engine.decide(Tap("K1", 4, "04A1B2C3D4E5F7", amount_fen=1000)).verdict == "grant"
    earned = [r[0] for r in db.execute("SELECT points_earned FROM taps WHERE seq IN (3, 4) "
                                       "ORDER BY seq")]
    # July (the clock) is the first member's birthday month: their points are multiplied.
    assert earned[1] > 0 and earned[0] == earned[1] * admin.policy.birthday_multiplier


def test_erase_keeps_verify_and_report_totals(tmp_path):
    db, admin, engine, mid = _site_with_taps(str(tmp_path / "site.db"))
    now = admin.clock()
    before = (reports.daily(db, admin.policy, now.date(), 3), reports.members(db, admin.policy,
                                                                               now, 30))
    result = admin.erase_member(mid, key="erase-1")
    assert result["cards_blocked"] == 1 and verify(db) == []
    after = (reports.daily(db, admin.policy, now.date(), 3), reports.members(db, admin.policy,
                                                                              now, 30))
    assert after == before
    assert lookup.members_by_phone(db, PHONE) == []
    assert admin.reveal(mid, "test") == {"name": None, "phone": None, "birthday": None,
                                         "note": None, "email": None}
    assert db.execute("SELECT count(*) FROM taps WHERE member_id = ?", (mid,)).fetchone()[0] == 2
    assert engine.decide(Tap("K1", 9, UID, amount_fen=1000)).reason == "blocked"
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert _found(Path(tmp_path / "site.db").read_bytes()) == []
    # The phone is free again: the person can sign up anew.
    assert admin.add_member("", phone=PHONE, consent_terms="v2")["member_id"] == mid + 1


def test_rotation_keeps_every_member_readable_even_mid_way(any_cli, monkeypatch):
    cli = any_cli
    _add_two(cli)
    for i in range(5):
        jrun(cli, "member", "add", "--name", f"m{i}", "--phone", f"1360000000{i}",
             "--consent-terms", "v")
    monkeypatch.setattr(upgrade, "BATCH", 2)
    seen: list[int] = []
    real = upgrade.reseal_all

    def one_batch_then_look(db, vault):
        assert upgrade.reseal_batch(db, vault) == 2  # members 1, 2 on version 2; 3-7 on 1
        mid_way = dict(db.execute("SELECT id, personal_version FROM members").fetchall())
        assert mid_way == {1: 2, 2: 2, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1}
        for phone in (PHONE, PHONE2, "13600000004"):
            seen.extend(m["id"] for m in lookup.members_by_phone(db, phone))
        seen.extend(int(Admin(db).reveal(m, "t")["phone"] is not None) for m in (1, 7))
        return 2 + real(db, vault)

    monkeypatch.setattr(upgrade, "reseal_all", one_batch_then_look)
    out = jrun(cli, "datakey", "rotate")
    assert out["key_version"] == 2 and out["members_resealed"] == 7
    assert seen == [1, 2, 7, 1, 1]
    keys = keyfile.read_keys(cli.key)
    assert sorted(keys) == [2]
    for mid in range(1, 8):
        assert jrun(cli, "member", "show", str(mid), "--reveal")["phone"].startswith("13")
    assert jrun(cli, "member", "show", "--phone", PHONE)["id"] == 1
    status = jrun(cli, "datakey", "status")
    assert status["members_by_version"] == {"2": 7} and status["versions"] == "2"


def test_missing_or_wrong_data_key_is_one_line(cli, tmp_path):
    _add_two(cli)
    key = Path(cli.db + ".key")
    original = key.read_bytes()
    key.unlink()
    for argv in (["member", "show", "1", "--reveal"], ["member", "show", "--phone", PHONE],
                 ["member", "add", "--name", "x", "--consent-terms", "v"]):
        code, out, err = cli(*argv)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"no data key file {key}" in err and "Traceback" not in err
    keyfile.create(str(key))  # another site's key: never a silent miss
    for argv in (["member", "show", "1", "--reveal"], ["member", "show", "--phone", PHONE]):
        code, out, err = cli(*argv)
        assert code == 2 and "is not this database's data key" in err and str(key) in err, err
        assert len(err.strip().splitlines()) == 1
    key.write_bytes(original)
    assert jrun(cli, "member", "show", "--phone", PHONE)["id"] == 1


def test_upgrade_seals_rows_an_older_version_left_in_plain_text(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(keyfile.ENV, raising=False)
    path = str(tmp_path / "site.db")
    db = open_db(path)
    db.execute("INSERT INTO members (name, phone, birthday, tier, created_at) VALUES "
               "(?, ?, ?, 'silver', 0)", (NAME, "138 1234-5678", BDAY))
    db.execute("INSERT INTO ops VALUES ('k1', 'member.add', ?, '{}', 0)",
               (json.dumps({"name": NAME, "phone": PHONE, "birthday": BDAY}),))
    db.execute("INSERT INTO taps (ts, device_id, seq, uid, member_id, verdict, reason, relay_ms, "
               "pattern, text, balance_fen, points, uses_left, reply) VALUES (0, 'G1', 1, ?, 1, "
               "'grant', 'ok', 800, 1, ?, 0, 0, -1, ?)",
               (UID, f"Welcome {NAME} · pass to 12-01", f"Welcome {NAME}".encode()))
    db.conn.close()
    assert NAME.encode() in Path(path).read_bytes()
    assert main(["--db", path, "upgrade"]) == 2  # no key yet: init creates it
    assert "no data key file" in capsys.readouterr().err
    assert main(["--db", path, "--json", "init"]) == 0
    assert json.loads(capsys.readouterr().out)["members_sealed"] == 1
    assert _found(Path(path).read_bytes()) == []
    db = open_db(path)
    assert lookup.members_by_phone(db, PHONE)[0]["name"] == "李*"
    assert Admin(db).reveal(1, "test")["birthday"] == BDAY
    assert db.execute("SELECT birth_month FROM members").fetchone()[0] == 7
    assert db.execute("SELECT text, reply FROM taps").fetchone() == \
        ("Welcome 李* · pass to 12-01", b"")
    with pytest.raises(Exception, match="append-only"):  # the guard is back
        db.execute("UPDATE taps SET text = 'x'")


def test_retention_erases_idle_members_and_keeps_those_holding_money(tmp_path):
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text("[privacy]\nretention_days = 30\n")
    policy = load_policy(str(policy_file))
    db = open_db(None)
    t0 = datetime(2026, 1, 1, tzinfo=policy.tz)
    now = [t0]
    admin = Admin(db, policy, lambda: now[0])
    idle = admin.add_member(NAME, phone=PHONE, consent_terms="v")["member_id"]
    rich = admin.add_member(NAME2, phone=PHONE2, consent_terms="v")["member_id"]
    admin.topup(rich, 5000)
    now[0] = t0 + timedelta(days=29)
    fresh = admin.add_member("Fresh", consent_terms="v")["member_id"]
    now[0] = t0 + timedelta(days=31)
    dry = admin.retention(dry_run=True)
    assert [r["member_id"] for r in dry["due"]] == [idle] and dry["erased"] == []
    assert [r["member_id"] for r in dry["kept_holding_principal"]] == [rich]
    assert lookup.members_by_phone(db, PHONE)[0]["id"] == idle
    done = admin.retention()
    assert done["erased"] == [idle] and lookup.members_by_phone(db, PHONE) == []
    assert admin.reveal(fresh, "t")["name"] == "Fresh" and verify(db) == []


def test_masks_and_normalisation():
    assert normalise_phone("+86 138-1234-5678") == PHONE
    assert mask_phone(PHONE) == "138****5678" and mask_name("李雷") == "李*"
    assert mask_name("") == "" and mask_phone(None) is None


def test_api_phone_lookup_follows_a_rotation_and_a_lost_key_is_one_line(api_site):
    """The API reads the key file as it changes: a rotation needs no restart of a daemon that
    reads the file itself; a missing key is a one-line JSON error, never an empty answer."""
    c, h = api_site.client(), api_site.auth("members")
    ask = lambda: c.get("/v1/members", params={"phone": "13800138000"}, headers=h)  # noqa: E731
    assert [m["id"] for m in ask().json()["members"]] == [api_site.member_id]
    db = open_db(api_site.path)
    assert upgrade.rotate(db)["key_version"] == 2
    db.conn.close()
    assert [m["id"] for m in ask().json()["members"]] == [api_site.member_id]
    os.unlink(f"{api_site.path}.key")
    r = ask()
    assert r.status_code == 500 and "no data key file" in r.json()["error"]
    assert "\n" not in r.json()["error"]
