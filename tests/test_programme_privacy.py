# Runs on CPython (pytest): the membership programme with privacy (#15 x #16) — sealed e-mail, masked outbox, birthdays.
"""The contact e-mail is sealed with the member's personal fields (never in the database file,
its WAL or the outbox); the sender opens the real address and name only when it sends;
erasure and retention destroy the e-mail and drop what was not sent; the member export
includes it; a key rotation keeps it; the birthday coupon needs only the birth month."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from host.admin import Admin
from host.cli.app import main
from host.errors import Conflict, InputError
from host.messages import sender
from host.privacy import keyfile
from host.privacy.vault import Vault
from host.rules.policy import build_policy, load_policy
from host.store.db import open_db
from site_support import Clock, make_site

NAME, EMAIL = "李雷雷", "li.lei@example.com"
#: What must never be found in clear in the database file or its WAL.
SECRETS = [NAME, EMAIL, "li.lei", "example.com"]


class Capture:
    """A channel that keeps what it was given."""

    def __init__(self) -> None:
        self.got: list = []

    def send(self, m) -> None:
        self.got.append(m)


def policy(**rules):
    raw = load_policy().raw
    return build_policy({**raw, "messages": {**raw["messages"], "channels": ["email"]},
                         "coupon_rules": {**raw["coupon_rules"], **rules}})


def send(db, admin, clock, chan):
    return sender.send_due(db, admin.policy, {"email": chan}, lambda: int(clock().timestamp()))


def _found(path: str) -> list[str]:
    data = Path(path).read_bytes()
    wal = Path(path + "-wal")
    data += wal.read_bytes() if wal.exists() else b""
    return [s for s in SECRETS if s.encode() in data]


def test_no_email_or_name_in_database_or_outbox_and_sender_opens_them(tmp_path, monkeypatch):
    monkeypatch.delenv(keyfile.ENV, raising=False)
    path = str(tmp_path / "site.db")
    assert main(["--db", path, "init"]) == 0
    db, clock = open_db(path), Clock(2026, 4, 20, 9, 0)
    keep_wal = open_db(path)  # a second connection keeps the WAL from being checkpointed away
    try:
        admin = Admin(db, policy(), clock)
        mid = admin.add_member(NAME, birthday="1990-04-20", consent_terms="t1")["member_id"]
        assert admin.set_contact(mid, email=EMAIL)["email"] == "l*@e*"
        admin.topup(mid, 1000)                                       # a receipt
        assert admin.queue_messages()["queued"] == 1                 # the birthday greeting
        rows = db.execute("SELECT kind, recipient, body FROM messages ORDER BY id").fetchall()
        assert [(k, to) for k, to, _ in rows] == [("receipt", "l*@e*"), ("birthday", "l*@e*")]
        assert "{name}" in rows[1][2]
        assert _found(path) == []
        chan = Capture()
        assert send(db, admin, clock, chan)["sent"] == 2
        assert [m.recipient for m in chan.got] == [EMAIL, EMAIL]
        assert NAME in chan.got[1].body and "{name}" not in chan.got[1].body
        assert _found(path) == []
        assert main(["--db", path, "datakey", "rotate"]) == 0
        assert Admin(db, admin.policy, clock).reveal(mid, "t")["email"] == EMAIL
    finally:
        keep_wal.conn.close()


def test_erase_destroys_the_email_drops_unsent_messages_and_export_has_them():
    db, _, _, clock, mid = make_site()
    admin = Admin(db, policy(), clock)
    admin.set_contact(mid, email=EMAIL)
    admin.topup(mid, 1000)
    data = admin.export_member(mid, "t")
    assert data["profile"]["email"] == EMAIL and data["contact"]["opt_out"] is False
    assert [m["kind"] for m in data["messages"]] == ["receipt"]
    admin.erase_member(mid)
    assert admin.reveal(mid, "t")["email"] is None
    assert db.execute("SELECT email FROM member_contacts").fetchall() == [(None,)]
    assert db.execute("SELECT status, recipient FROM messages").fetchall() == [("skipped", "")]
    chan = Capture()
    assert send(db, admin, clock, chan)["sent"] == 0 and chan.got == []
    with pytest.raises(Conflict):
        admin.set_contact(mid, email=EMAIL)


def test_email_needs_consent_and_a_cleared_email_is_not_sent_to():
    db, _, _, clock, _ = make_site()
    admin = Admin(db, policy(), clock)
    anon = admin.add_member()["member_id"]
    with pytest.raises(InputError, match="consent"):
        admin.set_contact(anon, email=EMAIL)
    assert admin.set_contact(anon, opt_out=True)["opt_out"] is True   # no personal data
    mid = admin.add_member("Wang", consent_terms="t1")["member_id"]
    admin.set_contact(mid, email=EMAIL)
    admin.topup(mid, 1000)
    admin.set_contact(mid, email="")                                 # cleared after queueing
    assert admin.reveal(mid, "t")["email"] is None
    assert send(db, admin, clock, Capture())["skipped"] == 1


def test_retention_destroys_the_email():
    db, _, _, clock, mid = make_site()
    raw = load_policy().raw
    pol = build_policy({**raw, "privacy": {**raw.get("privacy", {}), "retention_days": 30}})
    admin = Admin(db, pol, clock)
    admin.set_contact(mid, email=EMAIL)
    later = clock() + timedelta(days=31)
    assert Admin(db, pol, lambda: later).retention()["erased"] == [mid]
    assert admin.reveal(mid, "t")["email"] is None
    assert db.execute("SELECT email FROM member_contacts").fetchall() == [(None,)]


def test_birthday_coupon_by_the_birth_month_opens_no_sealed_data(monkeypatch):
    db, _, _, clock, _ = make_site()                                 # 2026-03-10
    admin = Admin(db, policy(birthday="birthday_wash", birthday_days_before=7), clock)
    ids = [admin.add_member(n, birthday=b, consent_terms="t1")["member_id"]
           for n, b in (("A", "03-31"), ("B", "04-02"), ("C", "05-20"))]

    def refuse(*_):
        raise AssertionError("the birthday coupon run opened sealed data")
    monkeypatch.setattr(Vault, "open", refuse)
    assert [r["member_id"] for r in admin.run_coupon_rules()["issued"]] == [ids[0]]
    clock.set(2026, 3, 25, 9, 0)                                     # April starts in 7 days
    assert [r["member_id"] for r in admin.run_coupon_rules()["issued"]] == [ids[1]]
    clock.set(2026, 5, 31, 9, 0)
    assert [r["member_id"] for r in admin.run_coupon_rules()["issued"]] == [ids[2]]
    assert admin.run_coupon_rules()["issued"] == []                  # once a year


def test_upgrade_seals_contact_emails_an_older_version_kept_in_clear(tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.delenv(keyfile.ENV, raising=False)
    path = str(tmp_path / "site.db")
    assert main(["--db", path, "init"]) == 0
    db = open_db(path)
    admin = Admin(db, policy(), Clock(2026, 3, 10, 12, 0))
    mid = admin.add_member(NAME, phone="13800000000", consent_terms="t1")["member_id"]
    db.execute("INSERT INTO member_contacts (member_id, email, updated_at) VALUES (?, ?, 0)",
               (mid, EMAIL))                                   # as the programme kept it
    db.execute("INSERT INTO messages (member_id, kind, channel, recipient, subject, body, "
               "dedup, next_attempt_at, created_at) VALUES (?, 'receipt', 'email', ?, 's', "
               "'b', 'd1', 0, 0)", (mid, EMAIL))
    db.execute("INSERT INTO ops VALUES ('k9', 'messages.contact', ?, '{}', 0)",
               (json.dumps({"member_id": mid, "email": EMAIL, "opt_out": None}),))
    db.conn.close()
    capsys.readouterr()
    assert main(["--db", path, "--json", "upgrade"]) == 0
    assert json.loads(capsys.readouterr().out)["contact_emails_sealed"] == 1
    assert _found(path) == []
    db = open_db(path)
    assert db.execute("SELECT email FROM member_contacts").fetchone()[0] == "l*@e*"
    assert db.execute("SELECT recipient FROM messages").fetchone()[0] == "l*@e*"
    assert Admin(db).reveal(mid, "t")["email"] == EMAIL
    assert Admin(db).reveal(mid, "t")["phone"] == "13800000000"        # the rest kept
    assert main(["--db", path, "--json", "upgrade"]) == 0                # nothing left
    assert json.loads(capsys.readouterr().out)["contact_emails_sealed"] == 0


def test_rotation_keeps_the_email_and_the_sender_on_both_backends(db_url, monkeypatch):
    """``datakey rotate`` on SQLite and PostgreSQL (the key file beside the site file, or in
    TAPKIOSK_DATA_KEY_FILE): the sealed e-mail reads back under the new key, and a message
    queued before the rotation is sent to the real address after it."""
    if not db_url.startswith("postgresql://"):
        monkeypatch.delenv(keyfile.ENV, raising=False)
    assert main(["--db", db_url, "init"]) == 0
    db, clock = open_db(db_url), Clock(2026, 4, 20, 9, 0)
    try:
        admin = Admin(db, policy(), clock)
        mid = admin.add_member(NAME, consent_terms="t1")["member_id"]
        admin.set_contact(mid, email=EMAIL)
        admin.topup(mid, 1000)                                       # a receipt, queued
        assert main(["--db", db_url, "datakey", "rotate"]) == 0
        assert db.execute("SELECT personal_version FROM members").fetchall() == [(2,)]
        fresh = Admin(db, admin.policy, clock)
        assert fresh.reveal(mid, "t")["email"] == EMAIL and fresh.reveal(mid, "t")["name"] == NAME
        chan = Capture()
        assert send(db, fresh, clock, chan)["sent"] == 1
        assert [m.recipient for m in chan.got] == [EMAIL]
    finally:
        db.conn.close()
