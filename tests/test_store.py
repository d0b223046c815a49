# Runs on CPython (pytest): store pragmas, migrations, device registry, policy validation.
import pytest

from host.errors import Conflict, InputError, NotFound
from host.rules.policy import load_policy
from host.store.db import MIGRATIONS, open_db, schema_version
from host.store.devices import device_key, get_device, register_device, touch_device


def test_pragmas_and_migrations(tmp_path):
    path = tmp_path / "sub" / "site.db"
    db = open_db(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2       # FULL
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert schema_version(db) == MIGRATIONS[-1][0]
    db.conn.close()
    db2 = open_db(path)                                                   # re-open: no-op
    assert db2.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(MIGRATIONS)
    assert {"members", "cards", "devices", "passes", "lots", "ledger", "taps", "ops",
            "payments", "tier_changes", "presence"} <= set(db2.table_names())


def test_register_device_idempotent_conflict_rotate():
    db = open_db(":memory:")
    key = bytes(range(32))
    assert register_device(db, "gate-1", "gate", key=key, direction="in") == key
    assert register_device(db, "gate-1", "gate", key=key) == key          # same key: unchanged
    assert register_device(db, "gate-1", "gate") == key                   # no key: unchanged
    with pytest.raises(Conflict):
        register_device(db, "gate-1", "gate", key=b"\x01" * 32)
    with pytest.raises(Conflict):
        register_device(db, "gate-1", "wash", key=key)
    new = register_device(db, "gate-1", "gate", rotate=True)
    assert new != key and len(new) == 32 and device_key(db, "gate-1") == new
    assert register_device(db, "gate-1", "gate", key=key, rotate=True) == key
    fresh = register_device(db, "W1", "wash")
    assert len(fresh) == 32 and fresh != key


@pytest.mark.parametrize("device_id,kind,kw", [
    ("", "gate", {}), ("x" * 17, "gate", {}), ("bad id", "gate", {}), ("é", "gate", {}),
    ("G1", "door", {}), ("G1", "gate", {"key": b"short"}), ("G1", "gate", {"direction": "up"}),
    ("G1", "gate", {"hours": "25:00-26:00"}), ("G1", "gate", {"duplicate_window_s": -1}),
    ("G1", "gate", {"colour": "red"}), ("G1", "kiosk", {"anti_passback": True}),
])
def test_register_device_rejects(device_id, kind, kw):
    db = open_db(None)
    with pytest.raises(InputError):
        register_device(db, device_id, kind, **kw)
    assert db.execute("SELECT count(*) FROM devices").fetchone()[0] == 0


def test_get_device_and_touch():
    db = open_db(None)
    register_device(db, "G1", "gate", direction="out", hours="06:00-23:00")
    d = get_device(db, "G1")
    assert d["kind"] == "gate" and d["direction"] == "out" and d["hours"] == "06:00-23:00"
    assert d["anti_passback"] is True and "key" not in d and d["last_seq"] == 0
    touch_device(db, "G1", last_seq=70000, online=True, fw="1.2", last_seen=5, down_seq=3)
    touch_device(db, "G1", last_seq=12)                                   # never backwards
    d = get_device(db, "G1")
    assert (d["last_seq"], d["online"], d["fw"], d["last_seen"], d["down_seq"]) == \
        (70000, 1, "1.2", 5, 3)
    with pytest.raises(NotFound):
        get_device(db, "nope")
    with pytest.raises(NotFound):
        device_key(db, "nope")
    with pytest.raises(NotFound):
        touch_device(db, "nope", online=False)
    with pytest.raises(InputError):
        touch_device(db, "G1", kind="wash")


def _policy(tmp_path, text):
    p = tmp_path / "policy.toml"
    p.write_text(text, encoding="utf-8")
    return str(p)


@pytest.mark.parametrize("text,needle", [
    ('[tiers.gold]\nrank = 2\ndiscount_pct = "abc"\n',
     'policy: tiers.gold.discount_pct must be an integer 1..100, got "abc"'),
    ('[points]\ncombine = "add"\n', "points.combine must be one of max|multiply"),
    ('[wash]\norder = ["pass", "cash"]\n', "wash.order"),
    ('[[stored_value.ladder]]\nmin = "100.005"\nbonus = "1.00"\n', "stored_value.ladder[0].min"),
    ('[site]\ntimezone = "Mars/Base"\n', "site.timezone"),
    ('[points]\nper_yen = 1\n', "unknown key points.per_yen"),
    ('[plans.x]\nkind = "time"\nduration = "week"\nprice = "1.00"\ncovers = ["gate"]\n',
     "plans.x.duration"),
    ('[plans.x]\nkind = "punch"\nuses = 3\nprice = "1.00"\ncovers = ["wash:9"]\n',
     "plans.x.covers"),
    ('[wash.programs.1]\nname = "Basic"\nprice = 25\n', "wash.programs.1.price"),
    ("[site\n", "not valid TOML"),
    ('[gate]\nrelay_ms = -1\n', "gate.relay_ms must be an integer 0..60000, got -1"),
    ('[kiosk]\nmax_amount = "x"\n', "kiosk.max_amount"),
    ('[dormant]\ndays = 0\n', "dormant.days must be an integer 1..3660, got 0"),
    ('[security]\nmode = "x"\n', "security.mode must be one of uid|sun"),
    ('bogus = 1\n', "unknown key bogus"),
    # Sections are checked in file order: the site's error is the one reported.
    ('[points]\ncombine = "add"\n[site]\ntimezone = "Mars/Base"\n', "site.timezone"),
])
def test_policy_errors_name_the_key(tmp_path, text, needle):
    with pytest.raises(InputError) as e:
        load_policy(_policy(tmp_path, text))
    assert needle in str(e.value)


def test_policy_overlay(tmp_path):
    pol = load_policy(_policy(tmp_path, '[points]\ncombine = "multiply"\n'
                                        '[wash.programs.3]\nname = "Wax"\nprice = "60.00"\n'
                                        '[plans.wax5]\nkind = "punch"\nuses = 5\n'
                                        'price = "250.00"\ncovers = ["wash:3"]\n'))
    assert pol.combine == "multiply" and pol.points_per_yuan == 1
    assert list(pol.programs) == [3] and pol.programs[3].price_fen == 6000
    assert list(pol.plans) == ["wax5"]
    assert load_policy().tiers["gold"].discount_pct == 88
    with pytest.raises(InputError, match="cannot read"):
        load_policy(str(tmp_path / "missing.toml"))


def test_migration_3_adopts_tables_an_older_daemon_created(tmp_path):
    """Daemons before migration 3 created device_events/device_config themselves."""
    path = tmp_path / "site.db"
    db = open_db(path)
    db.conn.execute("DELETE FROM schema_migrations WHERE version = 3")
    db.conn.execute("INSERT INTO device_config VALUES ('gate-1', 4, 'x', 3)")
    db.conn.close()
    db = open_db(path, upgrade=True)
    assert db.execute("SELECT version, acked FROM device_config").fetchall() == [(4, 3)]
    assert {3} <= {r[0] for r in db.execute("SELECT version FROM schema_migrations")}


def test_a_missing_earlier_migration_is_applied_after_a_later_one(tmp_path):
    """Applied versions are looked up one by one, not by the highest applied."""
    path = tmp_path / "site.db"
    db = open_db(path)
    db.conn.executescript("DELETE FROM schema_migrations WHERE version = 3;"
                          "DROP TABLE device_events; DROP TABLE device_config;"
                          "INSERT OR IGNORE INTO schema_migrations VALUES (999, 'later', 0);")
    db.conn.close()
    db = open_db(path, upgrade=True)
    assert {"device_events", "device_config"} <= set(db.table_names())
    assert schema_version(db) == 999


def test_register_device_board_binding():
    db = open_db(None)
    key = register_device(db, "gate-01", "gate", board_mac="24-6F-28-AA-BB-CC")
    assert get_device(db, "gate-01")["board_mac"] == "24:6f:28:aa:bb:cc"
    assert register_device(db, "gate-01", "gate", board_mac="246f28aabbcc") == key   # same board
    assert register_device(db, "gate-01", "gate") == key                             # no MAC: kept
    with pytest.raises(Conflict, match=r"^device gate-01 is bound to board 24:6f:28:aa:bb:cc; "
                                       r"use --rebind to move it to this board \(the old board "
                                       r"stops working\)$"):
        register_device(db, "gate-01", "gate", board_mac="24:0a:c4:12:34:56")
    assert device_key(db, "gate-01") == key
    moved = register_device(db, "gate-01", "gate", board_mac="24:0a:c4:12:34:56", rebind=True)
    assert moved != key and get_device(db, "gate-01")["board_mac"] == "24:0a:c4:12:34:56"
    with pytest.raises(Conflict, match="new key"):   # a move must not keep the old key
        register_device(db, "gate-01", "gate", key=moved, board_mac="24:6f:28:aa:bb:cc", rebind=True)
    unbound = register_device(db, "gate-01", "gate", rebind=True)   # image for a replacement
    assert unbound != moved and get_device(db, "gate-01")["board_mac"] is None
    # One board, one device: binding the MAC elsewhere unbinds the previous holder.
    register_device(db, "gate-01", "gate", board_mac="24:0a:c4:12:34:56")
    register_device(db, "wash-3", "wash", board_mac="24:0a:c4:12:34:56")
    assert get_device(db, "gate-01")["board_mac"] is None
    for bad in ("24:6f:28:aa:bb", "zz:6f:28:aa:bb:cc", "", "24:6f:28:aa:bb:cc:dd"):
        with pytest.raises(InputError, match="bad board MAC"):
            register_device(db, "G9", "gate", board_mac=bad)
    assert db.execute("SELECT count(*) FROM devices WHERE device_id = 'G9'").fetchone()[0] == 0
    with pytest.raises(Exception, match="CHECK"):
        db.execute("UPDATE devices SET board_mac = 'AA:BB:CC:DD:EE:FF' WHERE device_id = 'wash-3'")


def test_readonly_view_refuses_writes_and_a_missing_file(tmp_path):
    import sqlite3

    from host.store import views

    with pytest.raises(InputError):
        views.open_readonly(str(tmp_path / "nope.db"))
    assert not (tmp_path / "nope.db").exists()
    path = tmp_path / "site.db"
    db = open_db(path)
    register_device(db, "W1", "wash")
    conn = views.open_readonly(str(path))
    try:
        assert views.device_kind_key(conn, "W1") == ("wash", device_key(db, "W1"))
        assert views.device_kind_key(conn, "W2") is None
        assert views.last_tap_id(conn) == 0 and views.tap_after(conn, "W1", 0) is None
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("DELETE FROM devices")
    finally:
        conn.close()


def test_tap_commit_indexes_are_gone_and_the_sweeps_still_seek(tmp_path):
    """Issue 19: a tap commit no longer writes ledger_lot or lots_expiry; a member's expiry
    sweep and lot consumption seek the lots UNIQUE index by member."""
    db = open_db(tmp_path / "s.db")
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")}
    assert not {"ledger_lot", "lots_expiry"} & names
    assert {"ledger_member", "taps_member_free"} <= names
    assert "taps_member" not in names                 # migration 24: partial, see below
    assert not {"ledger_ts", "taps_ts"} & names       # migration 23: period reads by day marks
    for sql in ("SELECT id FROM lots WHERE expires_at > 0 AND expires_at <= 1 AND "
                "remaining > 0 AND member_id = 7",
                "SELECT id FROM lots WHERE member_id = 1 AND currency = 'points' AND "
                "remaining > 0 ORDER BY expires_at = 0, expires_at, id"):
        plan = " ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql))
        assert "SEARCH lots USING INDEX sqlite_autoindex_lots_1 (member_id=?" in plan


def test_a_members_taps_are_read_by_index_without_a_by_member_index_of_paying_taps(tmp_path):
    """Issue 19, migration 24: a tap that charged is found through its ledger rows
    (ledger_member), one on a pass through taps_pass, the others through taps_member_free;
    the reads by member (member card, data export, duplicate check, the privacy upgrade's
    greeting scrub) seek all three and scan neither table."""
    from host.privacy.upgrade import _GREETING_ROWS
    from host.rules.engine import _DUPLICATE_SQL
    from host.store import member_taps
    db = open_db(tmp_path / "s.db")
    for sql in (member_taps.select("ts, text", "ORDER BY id DESC LIMIT 10"),
                member_taps.select("id, ts"), _DUPLICATE_SQL,
                f"UPDATE taps SET text = '' WHERE {_GREETING_ROWS['taps']}"):
        plan = [r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, [1] * sql.count("?"))]
        text = " | ".join(plan)
        assert "USING INDEX taps_member_free (member_id=?" in text, text
        assert "USING INDEX ledger_member (member_id=? AND currency=?" in text, text
        assert "USING COVERING INDEX taps_pass (pass_id=?" in text, text
        assert "USING COVERING INDEX passes_member (member_id=?)" in text, text
        assert not [p for p in plan if p.startswith(("SCAN taps", "SCAN ledger"))], text
        assert "USING INTEGER PRIMARY KEY (rowid=?)" in text, text
        assert "sqlite_autoindex_taps_1" not in text, text   # not every tap of the device
    # Only a tap row with neither a charge nor a pass is in the partial index.
    db.execute("INSERT INTO members (id, tier, created_at) VALUES (1, 'silver', 0)")
    for seq, charged, pass_id in ((1, 0, None), (2, 300, None), (3, 0, 4)):
        db.execute("INSERT INTO taps (ts, device_id, seq, uid, member_id, charged_fen, pass_id,"
                   " verdict, reason, relay_ms, pattern, text, balance_fen, points, uses_left) "
                   "VALUES (5, 'K1', ?, '04AA', 1, ?, ?, 'grant', 'ok', 0, 0, '', 0, 0, 0)",
                   (seq, charged, pass_id))
    assert db.execute("SELECT seq FROM taps INDEXED BY taps_member_free WHERE member_id = 1 "
                      "AND charged_fen = 0 AND pass_id IS NULL").fetchall() == [(1,)]


def test_a_new_device_key_starts_a_new_sequence_epoch():
    from host.store import site_state
    from host.store.devices import register_device
    db = open_db(":memory:")
    register_device(db, "G1", "gate")
    db.execute("UPDATE devices SET last_seq = 65540, resend_floor = 65539, down_seq = 131072 "
               "WHERE device_id = 'G1'")
    register_device(db, "G1", "gate", rotate=True)
    row = site_state.load_device(db, "G1")
    assert (row["highest"], row["resend_floor"]) == (0, 0)
    assert row["seq_base"] > 65540
    # A daemon that still holds the old epoch cannot write its highest seq back.
    site_state.save_states(db, [("G1", 65541, 1, True, 0)])
    assert db.execute("SELECT last_seq FROM devices").fetchone()[0] == 0
    site_state.save_states(db, [("G1", 65541, 1, True, row["seq_base"])])
    assert db.execute("SELECT last_seq FROM devices").fetchone()[0] == 65541


def test_open_db_refuses_pending_migrations_unless_upgrading(tmp_path):
    from host.store.db import SchemaOutdated
    path = tmp_path / "site.db"
    open_db(path).conn.execute("DELETE FROM schema_migrations WHERE version = 3")
    with pytest.raises(SchemaOutdated, match=r"lacks migration\(s\) 3 .* upgrade"):
        open_db(path)
    assert open_db(path, upgrade=True).execute(
        "SELECT count(*) FROM schema_migrations WHERE version = 3").fetchone()[0] == 1
