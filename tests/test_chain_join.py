# Runs on CPython (pytest): `tapkiosk chain join` — a single-store site moved into the chain's database.
"""Issue 17 (chain): members matched by card, conflicts listed with nothing written (or
skipped with --skip-conflicts), value and history moved so that verify holds, readers moved
into the store, personal data sealed again under the chain's key, a second run joins once."""

from __future__ import annotations

import json

import pytest

from host.cli.app import main
from host.ledger.book import verify
from host.store.db import open_db
from host.store.join import JoinConflicts, join_site

UID_A = "04A1B2C3D4E5F6"      # the site's member 1
UID_B = "04A1B2C3D4E5F7"      # the site's member 2
UID_C = "04A1B2C3D4E5F8"      # the chain's own member


@pytest.fixture
def cli(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TAPKIOSK_DB", raising=False)
    monkeypatch.delenv("TAPKIOSK_POLICY", raising=False)
    monkeypatch.delenv("TAPKIOSK_DATA_KEY_FILE", raising=False)

    def run(db, *argv):
        code = main(["--db", str(tmp_path / db), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    def ok(db, *argv):
        code, out, err = run(db, "--json", *argv)
        assert code == 0, err
        return json.loads(out) if out.strip() else None

    run.ok = ok
    run.path = lambda db: str(tmp_path / db)
    return run


def make_site(cli):
    """site.db: member 1 (Li, a phone, card A, 500.00 (a bonus lot), a wash paid, a gym punch card),
    member 2 (card B, 20.00), reader W1."""
    ok = cli.ok
    ok("site.db", "init")
    ok("site.db", "device", "add", "W1", "wash")
    ok("site.db", "member", "add", "--name", "Li Lei", "--phone", "13800138000",
       "--consent-terms", "t1")
    ok("site.db", "card", "enroll", "1", UID_A)
    ok("site.db", "topup", "1", "500.00")
    ok("site.db", "tap", "W1", UID_A, "--service", "1")
    ok("site.db", "pass", "sell", "1", "gym10", "--from-balance")
    ok("site.db", "member", "add")
    ok("site.db", "card", "enroll", "2", UID_B)
    ok("site.db", "topup", "2", "20.00")
    return ok("site.db", "member", "show", "1")


def make_chain(cli):
    ok = cli.ok
    ok("chain.db", "init")
    ok("chain.db", "store", "add", "north")
    ok("chain.db", "device", "add", "K1", "kiosk", "--store", "north")
    ok("chain.db", "member", "add")
    ok("chain.db", "card", "enroll", "1", UID_C)
    ok("chain.db", "topup", "1", "10.00")


def counts(cli):
    db = open_db(cli.path("chain.db"))
    try:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("members", "cards", "ledger", "taps", "devices", "passes", "lots")}
    finally:
        db.conn.close()


def test_join_moves_members_value_history_and_readers_once(cli):
    before = make_site(cli)
    make_chain(cli)
    result = cli.ok("chain.db", "chain", "join", cli.path("site.db"), "--store", "south")
    assert (result["members_new"], result["members_merged"], result["readers"]) == (2, 0, 1)
    assert result["replayed"] is False
    moved = cli.ok("chain.db", "member", "show", "--card", UID_A)
    for key in ("balance_fen", "principal_fen", "bonus_fen", "points", "qualifying", "tier",
                "lots", "recent_taps"):
        assert moved[key] == before[key], key
    assert [(p["plan"], p["uses_left"]) for p in moved["passes"]] == [("gym10", 10)]
    assert cli("chain.db", "verify")[0] == 0
    devices = {d["device_id"]: d["store"] for d in cli.ok("chain.db", "device", "list")}
    assert devices == {"K1": "north", "W1": "south"}
    # Personal data: sealed again under the chain's key, readable with it alone.
    shown = cli.ok("chain.db", "member", "show", "--card", UID_A, "--reveal")
    assert shown["name"] == "Li Lei" and "13800138000" in shown["phone"].replace(" ", "")
    # The moved reader keeps its key (no re-provisioning); the member pays at another store.
    assert (cli.ok("chain.db", "device", "key", "W1", "--show")["key"]
            == cli.ok("site.db", "device", "key", "W1", "--show")["key"])
    assert cli.ok("chain.db", "tap", "K1", UID_A, "--amount", "1.00")["verdict"] == "grant"
    snapshot = counts(cli)
    again = cli.ok("chain.db", "chain", "join", cli.path("site.db"), "--store", "south")
    assert again["replayed"] is True and counts(cli) == snapshot
    code, _, err = cli("chain.db", "chain", "join", cli.path("site.db"), "--store", "west")
    assert code == 2 and "idempotency key" in err


def test_a_card_known_to_the_chain_merges_the_member(cli):
    make_site(cli)
    make_chain(cli)
    cli.ok("chain.db", "card", "enroll", "1", UID_B)         # the same person, chain side
    result = cli.ok("chain.db", "chain", "join", cli.path("site.db"), "--store", "south")
    assert (result["members_new"], result["members_merged"]) == (1, 1)
    merged = cli.ok("chain.db", "member", "show", "--card", UID_C)
    assert merged["principal_fen"] == 10_00 + 20_00
    assert cli("chain.db", "verify")[0] == 0


def test_conflicts_are_listed_and_nothing_is_written(cli):
    make_site(cli)
    make_chain(cli)
    cli.ok("chain.db", "member", "add", "--phone", "13800138000", "--consent-terms", "t1")
    cli.ok("chain.db", "card", "enroll", "1", UID_B)
    cli.ok("chain.db", "card", "block", UID_B)                  # blocked at the chain
    cli.ok("chain.db", "device", "add", "W1", "wash", "--store", "north")
    snapshot = counts(cli)
    code, out, err = cli("chain.db", "chain", "join", cli.path("site.db"), "--store",
                             "south")
    assert code == 2 and "3 conflict(s): nothing was written" in err
    lines = out.strip().splitlines()
    assert lines == [
        "conflict: site member 1: its phone is chain member 2's",
        f"conflict: site member 2: card {UID_B} is active here and blocked at the chain "
        "(chain member 1)",
        "conflict: reader W1: the chain already has a reader with this id"]
    assert counts(cli) == snapshot and cli.ok("chain.db", "store", "list")[0]["name"] == "north"
    code, out, _ = cli("chain.db", "chain", "join", cli.path("site.db"), "--store",
                           "south", "--skip-conflicts")
    assert code == 0 and [x[:9] for x in out.splitlines()].count("skipped: ") == 3
    assert "members_new: 0" in out and "readers: 0" in out
    assert cli("chain.db", "verify")[0] == 0


def test_a_wrong_site_key_is_refused(cli, tmp_path):
    make_site(cli)
    make_chain(cli)
    other = tmp_path / "other.key"
    from host.privacy import keyfile
    keyfile.create(str(other))
    code, _, err = cli("chain.db", "chain", "join", cli.path("site.db"), "--store", "south",
                           "--site-key", str(other))
    assert code == 2 and "not the joining site's key" in err


def test_join_into_postgresql(cli, pg_server, tmp_path, monkeypatch):
    make_site(cli)
    from host.admin import Admin
    from host.privacy import keyfile
    key = str(tmp_path / "chain.key")
    keyfile.create(key)
    monkeypatch.setenv(keyfile.ENV, key)        # the chain's key; the site's is SITE.key
    site = cli.path("site.db")
    chain = open_db(pg_server.new_database())
    try:
        result = join_site(chain, site, "south", actor="test", site_key=site + ".key")
        assert (result["members_new"], result["readers"], result["replayed"]) == (2, 1, False)
        assert verify(chain) == []
        again = join_site(chain, site, "south", actor="test", site_key=site + ".key")
        assert again["replayed"] is True
        assert chain.execute("SELECT count(*) FROM members").fetchone()[0] == 2
    finally:
        chain.conn.close()
    chain = open_db(pg_server.new_database())       # a chain where card B is blocked
    try:
        admin = Admin(chain)
        admin.enroll_card(admin.add_member()["member_id"], UID_B)
        admin.set_card_status(UID_B, "blocked")
        with pytest.raises(JoinConflicts) as e:
            join_site(chain, site, "south", actor="test", site_key=site + ".key")
        assert e.value.lines == [f"site member 2: card {UID_B} is active here and blocked at "
                                 "the chain (chain member 1)"]
        assert chain.execute("SELECT count(*) FROM members").fetchone()[0] == 1
        assert chain.execute("SELECT count(*) FROM stores").fetchone()[0] == 0
    finally:
        chain.conn.close()


def _site_history(cli):
    """make_site plus what a store manager expects to find after joining: an open and a used
    coupon, message consent (an e-mail, an opt-out) and outbox history, a paid sale (and one
    still armed), a reader's fleet status and an update job."""
    from host.messages.outbox import enqueue
    from host.rules import sales
    from host.rules.policy import _default_raw, _merge, build_policy
    from host.store import fleet
    from host.store.db import transaction
    from tools.appfiles import build_bundle
    make_site(cli)
    ok = cli.ok
    ok("site.db", "device", "add", "K2", "kiosk")
    ok("site.db", "coupon", "issue", "1", "welcome")
    ok("site.db", "coupon", "issue", "1", "birthday_wash")
    ok("site.db", "messages", "contact", "1", "--email", "li@example.com")
    ok("site.db", "messages", "contact", "2", "--opt-out")
    site = open_db(cli.path("site.db"))
    pol = build_policy(_merge(_default_raw(), {"messages": {"channels": ["email"]}}))
    try:
        with transaction(site) as conn:
            for n in (1, 2):
                enqueue(conn, pol, 1, "receipt", "s", f"body {n}", f"r{n}", 1_700_000_000)
            conn.execute("UPDATE messages SET status = 'sent', sent_at = 1700000100 "
                         "WHERE dedup = 'r1'")
            sales.arm(conn, pol, "K2", amount_fen=3_00, items=[], service=0, timeout_s=600,
                      key=None, actor="t", ts=int(__import__("time").time()))
        from datetime import datetime, timedelta
        from host.rules.engine import Engine, Tap
        later = datetime.now(pol.tz) + timedelta(minutes=1)       # out of the wash's window
        d = Engine(site, pol, lambda: later).decide(Tap("W1", 2, UID_A, service=1))
        assert d.verdict == "grant" and "free" in d.text              # the wash coupon
        assert Engine(site, pol).decide(Tap("K2", 1, UID_A)).verdict == "grant"  # the sale
        from host.rules.voids import void_tap
        assert Engine(site, pol).decide(Tap("K2", 2, UID_A, amount_fen=2_00)).verdict == "grant"
        assert void_tap(Engine(site, pol), "K2", 2, void_seq=3).outcome == "reversed"
        with transaction(site) as conn:
            sales.arm(conn, pol, "K2", amount_fen=4_00, items=[], service=0, timeout_s=600,
                      key=None, actor="t", ts=int(__import__("time").time()))
        fleet.save_status(site, "W1", {"app": "0.2.0", "mpy": "1.22", "uptime_s": 5,
                                       "heap_free": 40000, "reset": 1, "link": 2,
                                       "outbox": 0, "trial": 0}, 1_700_000_000)
        fleet.add_rollout(site, build_bundle({"app/x.mpy": b"x"}, "0.3.0"), ["W1"], 0,
                          1_700_000_000)
    finally:
        site.conn.close()


def _history(db, uid):
    """The history of the member holding card ``uid`` and of the readers, as the chain
    reports it (ids resolved to device/seq and card)."""
    mid = db.execute("SELECT member_id FROM cards WHERE uid = ?", (uid,)).fetchone()[0]
    coupons = db.execute(
        "SELECT c.template, (SELECT count(*) FROM coupon_events e WHERE e.coupon_id = c.id "
        "AND e.event = 'redeem'), (SELECT max(t.device_id || '/' || t.seq) FROM coupon_events e"
        " JOIN taps t ON t.id = e.tap_id WHERE e.coupon_id = c.id) FROM coupons c "
        "WHERE c.member_id = ? ORDER BY c.template", (mid,)).fetchall()
    messages = db.execute("SELECT dedup, status FROM messages WHERE member_id = ? ORDER BY "
                          "dedup", (mid,)).fetchall()
    contact = db.execute("SELECT email, opt_out FROM member_contacts WHERE member_id = ?",
                         (mid,)).fetchone()
    sales = [(r[0], r[1], r[2], json.loads(r[3])["member_id"] == mid) for r in db.execute(
        "SELECT s.state, s.amount_fen, t.device_id || '/' || t.seq, s.result FROM sales s "
        "JOIN taps t ON t.id = s.tap_id ORDER BY s.id")]
    armed = db.execute("SELECT count(*) FROM sales WHERE state = 'armed'").fetchone()[0]
    fleet = db.execute("SELECT s.device_id, s.app, u.state, b.version FROM fleet_status s "
                       "JOIN fleet_updates u ON u.device_id = s.device_id JOIN fleet_bundles b"
                       " ON b.sha256 = u.bundle").fetchall()
    voids = db.execute("SELECT t.device_id || '/' || t.seq, v.outcome FROM tap_voids v JOIN "
                       "taps t ON t.id = v.tap_id WHERE v.member_id = ?", (mid,)).fetchall()
    return {"voids": [tuple(v) for v in voids],
            "coupons": [tuple(c) for c in coupons], "messages": [tuple(m) for m in messages],
            "contact": tuple(contact) if contact else None, "sales": sales, "armed": armed,
            "fleet": [tuple(f) for f in fleet]}


def _pg_chain(pg_server, tmp_path, monkeypatch):
    from host.privacy import keyfile
    key = str(tmp_path / "chain.key")
    if not (tmp_path / "chain.key").exists():
        keyfile.create(key)
    monkeypatch.setenv(keyfile.ENV, key)
    return open_db(pg_server.new_database())


def test_join_moves_coupons_messages_sales_and_fleet_into_postgresql(cli, pg_server, tmp_path,
                                                                     monkeypatch):
    _site_history(cli)
    site = open_db(cli.path("site.db"))
    before = {uid: _history(site, uid) for uid in (UID_A, UID_B)}
    site.conn.close()
    assert before[UID_A]["coupons"] == [("birthday_wash", 1, "W1/2"), ("welcome", 0, None)]
    assert before[UID_A]["sales"] == [("paid", 3_00, "K2/1", True)]
    assert before[UID_A]["messages"] == [("r1", "sent"), ("r2", "pending")]
    assert before[UID_A]["voids"] == [("K2/2", "reversed")]
    assert before[UID_B]["contact"] == (None, 1) and before[UID_A]["armed"] == 1
    chain = _pg_chain(pg_server, tmp_path, monkeypatch)
    try:
        path = cli.path("site.db")
        result = join_site(chain, path, "south", actor="test", site_key=path + ".key")
        assert (result["coupons"], result["coupon_events"], result["messages"],
                result["sales"], result["fleet_updates"]) == (2, 1, 2, 1, 1)
        after = {uid: _history(chain, uid) for uid in (UID_A, UID_B)}
        for uid in (UID_A, UID_B):
            assert after[uid] == {**before[uid], "armed": 0}, uid   # armed sales stay
        assert verify(chain) == []
        assert chain.execute("SELECT DISTINCT s.name FROM payments p JOIN stores s ON "
                             "s.id = p.store_id").fetchall() == [("south",)]  # its counter
        assert chain.execute("SELECT count(*) FROM payments WHERE store_id IS NULL"
                             ).fetchone()[0] == 0
        again = join_site(chain, path, "south", actor="test", site_key=path + ".key")
        assert again["replayed"] is True
        assert {uid: _history(chain, uid) for uid in (UID_A, UID_B)} == after
    finally:
        chain.conn.close()


def test_join_of_a_merged_member_lists_an_opt_out_conflict_and_never_resends(
        cli, pg_server, tmp_path, monkeypatch):
    from host.admin import Admin
    from host.messages.outbox import enqueue
    from host.rules.policy import _default_raw, _merge, build_policy
    from host.store.db import transaction
    _site_history(cli)
    path = cli.path("site.db")
    chain = _pg_chain(pg_server, tmp_path, monkeypatch)
    try:
        admin = Admin(chain)
        for uid in (UID_A, UID_B):                 # both site members are known at the chain
            admin.enroll_card(admin.add_member(consent_terms="t1")["member_id"], uid)
        admin.set_contact(2, opt_out=False)               # opted in at the chain
        admin.set_contact(1, email="li@example.com")
        with transaction(chain) as conn:                    # the chain sent "r2" already
            enqueue(conn, build_policy(_merge(_default_raw(), {"messages": {
                "channels": ["email"]}})), 1, "receipt", "s", "chain's", "r2", 1_700_000_000)
        snapshot = _history(chain, UID_A)
        with pytest.raises(JoinConflicts) as e:
            join_site(chain, path, "south", actor="test", site_key=path + ".key")
        assert e.value.lines == ["site member 2: opted out of messages here and in at the "
                                 "chain (chain member 2)"]
        assert _history(chain, UID_A) == snapshot            # nothing written
        result = join_site(chain, path, "south", actor="test", site_key=path + ".key",
                           skip_conflicts=True)
        assert (result["members_merged"], result["members_skipped"]) == (1, [2])
        assert result["messages_duplicate"] == 1
        moved = _history(chain, UID_A)
        assert moved["messages"] == [("join:south:r2", "skipped"), ("r1", "sent"),
                                     ("r2", "pending")]
        assert chain.execute("SELECT body FROM messages WHERE dedup = 'r2'").fetchone()[0] \
            == "chain's"
        assert moved["contact"] == snapshot["contact"]       # the chain's row stays
        assert [c[:2] for c in moved["coupons"]] == [("birthday_wash", 1), ("welcome", 0)]
        assert verify(chain) == []
    finally:
        chain.conn.close()
