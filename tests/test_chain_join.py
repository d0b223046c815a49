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
