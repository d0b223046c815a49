# Runs on CPython (pytest): the PostgreSQL backend — schema parity with SQLite, dialect, errors, retries, reconnects.
import json
import sqlite3
import threading

import pytest

from host.store import dialect
from host.store.db import RETRIES, open_db, retrying
from host.store.pg import Retryable


def _sqlite_schema(db):
    return {t: {r[1] for r in db.execute(f"PRAGMA table_info({t})").fetchall()}
            for t in db.table_names() if not t.startswith("sqlite_")}


def _pg_schema(db):
    out: dict[str, set[str]] = {}
    for t, c in db.execute("SELECT table_name, column_name FROM information_schema.columns "
                           "WHERE table_schema = current_schema()").fetchall():
        out.setdefault(t, set()).add(c)
    return out


def test_postgresql_schema_after_all_migrations_matches_sqlite(pg_server):
    lite = open_db(None)
    pg = open_db(pg_server.new_database())
    assert _pg_schema(pg) == _sqlite_schema(lite)
    versions = "SELECT version FROM schema_migrations ORDER BY version"
    assert pg.execute(versions).fetchall() == lite.execute(versions).fetchall()
    # Money and millisecond timestamps do not fit in int4: every INTEGER is a BIGINT.
    assert pg.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = "
                      "current_schema() AND data_type = 'integer'").fetchone()[0] == 0


@pytest.mark.parametrize("sql", ["UPDATE ledger SET delta = 1", "DELETE FROM taps",
                                 "DELETE FROM payments"])
def test_append_only_tables_refuse_update_and_delete_on_postgresql(store_url, sql):
    from site_support import UID, make_site
    from host.rules.engine import Tap
    db, admin, engine, _clock, mid = make_site(topup_fen=1000, db=store_url)
    engine.decide(Tap("K1", 1, UID, amount_fen=100))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute(sql)


def test_glob_checks_become_regular_expressions(pg_server):
    db = open_db(pg_server.new_database())
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO devices (device_id, kind, key, created_at) "
                   "VALUES ('bad id!', 'kiosk', ?, 0)", (bytes(32),))
    db.execute("INSERT INTO devices (device_id, kind, key, created_at, board_mac) "
               "VALUES ('K1', 'kiosk', ?, 0, '24:6f:28:aa:bb:cc')", (bytes(32),))
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE devices SET board_mac = '24:6F:28:AA:BB:CC'")


@pytest.mark.parametrize("sqlite_sql,pg_sql", [
    ("SELECT max(a, ?) FROM t WHERE b LIKE '%x'", "SELECT GREATEST(a, %s) FROM t WHERE b LIKE '%%x'"),
    ("SELECT max(a) FROM t", "SELECT max(a) FROM t"),
    ("SELECT substr('0' || m, -2), ifnull(a, 0), instr(t, ?) FROM x",
     "SELECT right('0' || m, 2), coalesce(a, 0), strpos(t, %s) FROM x"),
    ("SELECT a FROM t WHERE d = ?1 OR e = ?1", "SELECT a FROM t WHERE d = %(p1)s OR e = %(p1)s"),
    ("BEGIN IMMEDIATE", "BEGIN ISOLATION LEVEL SERIALIZABLE"),
    ("SELECT sum(n) FROM (SELECT count(*) AS n FROM t GROUP BY a HAVING n > 1)",
     "SELECT sum(n) FROM (SELECT count(*) AS n FROM t GROUP BY a HAVING ( count(*) ) > 1) AS _q7"),
    ("SELECT '?' FROM t WHERE a = ?", "SELECT '?' FROM t WHERE a = %s"),
])
def test_dialect_translation(sqlite_sql, pg_sql):
    assert dialect.translate(sqlite_sql)[0] == pg_sql


def test_insert_returns_lastrowid_and_or_ignore_does_nothing(pg_server):
    db = open_db(pg_server.new_database())
    cur = db.execute("INSERT INTO api_tokens (name, scope, hash, created_at) VALUES (?, ?, ?, ?)",
                     ("a", "admin", "0" * 64, 1))
    assert cur.lastrowid == 1 and cur.rowcount == 1
    db.execute("INSERT INTO device_events (ts, device_id, seq, code, name, value, text) "
               "VALUES (1, 'K1', 1, 1, 'x', 0, '')")
    cur = db.execute("INSERT OR IGNORE INTO device_events (ts, device_id, seq, code, name, value,"
                     " text) VALUES (2, 'K1', 1, 1, 'x', 0, '')")
    assert cur.rowcount == 0 and cur.lastrowid is None


def test_a_failed_write_is_raised_when_its_result_is_read(pg_server):
    """Writes inside a transaction go with the next statement that waits for an answer; the
    error of one is raised by that statement, or as soon as its own result is read."""
    db = open_db(pg_server.new_database())
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO ops VALUES ('k1', 'c', '{}', '{}', 1)")
    conn.execute("SAVEPOINT tap")
    conn.execute("INSERT INTO ops VALUES ('k2', 'c', '{}', '{}', 1)")
    cur = conn.execute("INSERT INTO ops VALUES ('k1', 'c', '{}', '{}', 1)")
    with pytest.raises(sqlite3.IntegrityError):
        cur.rowcount
    conn.execute("ROLLBACK TO tap")
    cur = conn.execute("INSERT INTO ops VALUES ('k3', 'c', '{}', '{}', 1)")
    assert cur.rowcount == 1
    conn.execute("RELEASE tap")
    conn.execute("COMMIT")
    assert db.execute("SELECT key FROM ops ORDER BY key").fetchall() == [("k1",), ("k3",)]


def test_a_failed_write_is_raised_by_the_rollback_to_that_undoes_it(pg_server):
    """What the engine does with a tap whose rules fail: ``ROLLBACK TO tap`` undoes the
    failed write and says so; the work before the savepoint stays and commits."""
    db = open_db(pg_server.new_database())
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO ops VALUES ('k1', 'c', '{}', '{}', 1)")
    conn.execute("SAVEPOINT tap")
    conn.execute("INSERT INTO ops VALUES ('k1', 'c', '{}', '{}', 1)")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("ROLLBACK TO tap")
    conn.execute("ROLLBACK TO tap")     # again: harmless
    conn.execute("INSERT INTO ops VALUES ('k3', 'c', '{}', '{}', 1)")
    conn.execute("RELEASE tap")
    conn.execute("COMMIT")
    assert db.execute("SELECT key FROM ops ORDER BY key").fetchall() == [("k1",), ("k3",)]


def test_a_failed_write_is_never_committed(pg_server):
    """No savepoint per statement: a transaction a failed write aborted cannot be committed
    (PostgreSQL would roll it back in silence): the COMMIT raises, nothing is kept."""
    db = open_db(pg_server.new_database())
    conn = db.conn
    for read_first in (False, True):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO ops VALUES ('k1', 'c', '{}', '{}', 1)")
        cur = conn.execute("INSERT INTO ops VALUES ('k1', 'c', '{}', '{}', 1)")
        if read_first:
            with pytest.raises(sqlite3.IntegrityError):
                cur.rowcount
        with pytest.raises(sqlite3.Error):      # the write's error, or "aborted"
            conn.execute("COMMIT")
        conn.rollback()
        assert not conn.in_transaction
        assert db.execute("SELECT count(*) FROM ops").fetchone()[0] == 0
    conn.execute("BEGIN IMMEDIATE")          # the connection goes on
    conn.execute("INSERT INTO ops VALUES ('k2', 'c', '{}', '{}', 1)")
    conn.execute("COMMIT")
    assert db.execute("SELECT key FROM ops").fetchall() == [("k2",)]


def test_a_tap_whose_write_fails_is_an_internal_deny_and_charges_nothing(pg_server):
    """A write of a tap's rules that fails (here a trigger refusing the spend's ledger rows)
    is sent with the tap's RELEASE: the engine still rolls the tap back to its savepoint and
    answers ``internal``, as on SQLite, and the next tap goes on."""
    from host.admin import Admin
    from host.rules.engine import Engine, Tap
    from host.store.devices import register_device
    db = open_db(pg_server.new_database())
    admin = Admin(db)
    register_device(db, "K1", "kiosk")
    mid = admin.add_member()["member_id"]
    admin.enroll_card(mid, "04A1B2C3D4E5F6")
    admin.topup(mid, 10_000)
    db.conn.execute_script(
        "CREATE FUNCTION no_777() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE "
        "EXCEPTION 'no' USING ERRCODE = 'check_violation'; END $$; CREATE TRIGGER no_777 "
        "BEFORE INSERT ON ledger FOR EACH ROW WHEN (NEW.delta BETWEEN -777 AND -500) "
        "EXECUTE FUNCTION "
        "no_777();")
    engine = Engine(db)
    bad, good = engine.decide_many([(Tap("K1", 1, "04A1B2C3D4E5F6", amount_fen=777), None),
                                    (Tap("K1", 2, "04A1B2C3D4E5F6", amount_fen=100), None)])
    assert (bad.verdict, bad.reason) == ("deny", "internal")
    assert good.verdict == "grant"
    assert db.execute("SELECT count(*) FROM taps").fetchone()[0] == 2
    assert db.execute("SELECT sum(charged_fen) FROM taps").fetchone()[0] == good_charge(db)


def good_charge(db):
    return -db.execute("SELECT sum(delta) FROM ledger WHERE kind = 'spend'").fetchone()[0]


def test_sum_of_integers_is_an_int_and_sum_of_a_condition_counts(pg_server):
    db = open_db(pg_server.new_database())
    db.execute("INSERT INTO ops VALUES ('a', 'c', '{}', '{}', 5000000000), "
               "('b', 'x', '{}', '{}', 7)")
    s, n = db.execute("SELECT sum(created_at), sum(command = 'c') FROM ops").fetchone()
    assert (s, n) == (5000000007, 1) and type(s) is int


def test_serialization_failure_is_retried_as_a_whole(pg_server):
    """Two transactions read then write the same row at once: PostgreSQL fails one with
    40001 (Retryable); ``retrying`` runs it again and both increments land."""
    url = pg_server.new_database()
    open_db(url).execute("INSERT INTO site_settings VALUES ('n', '0', 0)")
    dbs = [open_db(url), open_db(url)]
    both_read = threading.Barrier(2)
    attempts = []

    def bump(db):
        def once():
            attempts.append(1)
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                n = int(db.conn.execute("SELECT value FROM site_settings").fetchone()[0])
                if len(attempts) <= 2:
                    both_read.wait(5)
                db.conn.execute("UPDATE site_settings SET value = ?", (str(n + 1),))
                db.conn.execute("COMMIT")
            except BaseException:
                db.conn.rollback()
                raise
        retrying(once)

    threads = [threading.Thread(target=bump, args=(db,)) for db in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert dbs[0].execute("SELECT value FROM site_settings").fetchone()[0] == "2"
    assert len(attempts) == 3


def test_retrying_gives_up_after_its_attempts():
    calls = []

    def always():
        calls.append(1)
        raise Retryable("40001")

    before = dict(RETRIES)
    with pytest.raises(Retryable):
        retrying(always, attempts=3)
    assert len(calls) == 3
    assert RETRIES["40001"] - before["40001"] == 2     # run again twice, then given up


def test_a_lost_connection_is_reopened_at_the_next_statement(pg_server):
    url = pg_server.new_database()
    db = open_db(url)
    pid = db.execute("SELECT pg_backend_pid()").fetchone()[0]
    open_db(url).execute("SELECT pg_terminate_backend(?)", (pid,))
    with pytest.raises(sqlite3.OperationalError):
        db.execute("SELECT 1")          # the statement that found the connection gone fails
    assert db.execute("SELECT 1").fetchone() == (1,)   # the next one reconnects
    assert db.execute("SELECT pg_backend_pid()").fetchone()[0] != pid


def test_readonly_session_refuses_writes(pg_server):
    from host.store.readonly import open_readonly
    url = pg_server.new_database()
    ro = open_readonly(url)
    assert ro.execute("SELECT count(*) FROM members").fetchone() == (0,)
    with pytest.raises(sqlite3.OperationalError, match="read-only"):
        ro.execute("INSERT INTO ops VALUES ('k', 'c', '{}', '{}', 1)")


def test_two_processes_migrating_one_new_database_at_once(pg_server):
    import subprocess
    import sys
    pg_server.admin("CREATE DATABASE race_migrate")
    url = pg_server.url("race_migrate")
    code = f"from host.store.db import open_db; print(open_db({url!r}, upgrade=True) and 'ok')"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [o.strip() for o, _ in outs] == ["ok", "ok"], outs
    from host.store.db import MIGRATIONS, schema_version
    assert schema_version(open_db(url)) == MIGRATIONS[-1][0]


def test_cli_export_verify_and_backup_work_on_both(site_cli, db_url, tmp_path):
    code, out, _ = site_cli("--json", "export")
    assert code == 0 and '"schema_migrations"' in out
    assert site_cli("verify")[0] == 0
    code, out, err = site_cli("--json", "backup", str(tmp_path / "bk"))
    assert code == 0, err
    suffix = ".dump" if db_url.startswith("postgresql://") else ".db"   # tests/test_pg_backup
    assert json.loads(out)["backup"].endswith(suffix)


def test_a_connection_lost_inside_a_transaction_never_autocommits_the_rest(pg_server):
    """After the server closed the connection mid-transaction, the transaction's next
    statements fail (they must not run, one by one, on a new connection); ROLLBACK and the
    next BEGIN go on."""
    url = pg_server.new_database()
    db = open_db(url)
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO ops VALUES ('a', 'c', '{}', '{}', 1)")
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    open_db(url).execute("SELECT pg_terminate_backend(?)", (pid,))
    for _ in range(2):
        with pytest.raises(sqlite3.OperationalError):   # sent when its result is read
            conn.execute("INSERT INTO ops VALUES ('b', 'c', '{}', '{}', 1)").rowcount
    conn.execute("ROLLBACK")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO ops VALUES ('c', 'c', '{}', '{}', 1)")
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    open_db(url).execute("SELECT pg_terminate_backend(?)", (pid,))
    conn.execute("INSERT INTO ops VALUES ('d', 'c', '{}', '{}', 1)")   # held, then lost
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("COMMIT")              # finds the connection gone
    conn.execute("BEGIN IMMEDIATE")         # a new connection, without the held write
    conn.execute("INSERT INTO ops VALUES ('e', 'c', '{}', '{}', 1)")
    conn.execute("COMMIT")
    assert db.execute("SELECT key FROM ops").fetchall() == [("e",)]


def test_taps_and_console_topups_on_one_member_at_once(db_url):
    """A daemon's taps and the console's top-ups of the same member, on two connections at
    once: every top-up and every charge lands exactly once (a conflict is run again)."""
    from host.admin import Admin
    from host.ledger import book as ledger
    from host.rules.engine import Tap
    from site_support import UID, make_site
    from host.privacy import keyfile
    if not db_url.startswith("postgresql://"):
        keyfile.create(db_url + ".key")      # what `tapkiosk init` makes beside a file
    db, admin, engine, _clock, mid = make_site(topup_fen=100_000, db=db_url)
    start = sum(ledger.balances(db.conn, mid)[k] for k in ("principal_fen", "bonus_fen"))
    other = open_db(db_url)
    console = Admin(other, admin.policy, admin.clock)
    errors = []

    def taps():
        try:
            for seq in range(1, 41):
                engine.decide(Tap("K1", seq, UID, amount_fen=100))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def topups():
        try:
            for n in range(20):
                console.topup(mid, 1000, key=f"console-{n}")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=taps), threading.Thread(target=topups)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    charged, n = db.execute("SELECT sum(charged_fen), count(*) FROM taps WHERE "
                            "verdict = 'grant'").fetchone()
    b = ledger.balances(db.conn, mid)
    assert n == 40 and b["principal_fen"] + b["bonus_fen"] == start + 20 * 1000 - charged
    assert db.execute("SELECT count(*) FROM payments WHERE kind = 'topup'").fetchone()[0] == 21
    assert ledger.verify(db) == []


def test_a_tap_batch_locks_its_card_and_member_until_it_ends(pg_server):
    """READ COMMITTED taps (``begin_taps``): ``lock_card`` of one tap locks its card and
    member (sent with the next read); another daemon's lock of that member waits for the
    COMMIT (here: gives up at its lock timeout), a lock of another member does not wait."""
    from host.admin import Admin
    from host.store.db import begin_taps, lock_card
    url = pg_server.new_database()
    db = open_db(url)
    admin = Admin(db)
    uids = ["04A1B2C3D4E5F6", "04A1B2C3D4E5F7"]
    for uid in uids:
        admin.enroll_card(admin.add_member()["member_id"], uid)
    other = open_db(url)
    other.execute("SET lock_timeout = '200ms'")
    begin_taps(db.conn)
    assert db.conn.execute("SHOW transaction_isolation").fetchone() == ("read committed",)
    lock_card(db.conn, uids[0])
    assert db.conn.execute("SELECT 1").fetchone() == (1,)     # sends the held lock
    begin_taps(other.conn)
    lock_card(other.conn, uids[1])
    assert other.conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(sqlite3.OperationalError, match="lock"):
        lock_card(other.conn, uids[0])
        other.conn.execute("SELECT 1").fetchone()
    other.conn.rollback()
    db.conn.execute("COMMIT")
    begin_taps(other.conn)
    lock_card(other.conn, uids[0])
    assert other.conn.execute("SELECT 1").fetchone() == (1,)
    other.conn.execute("COMMIT")
