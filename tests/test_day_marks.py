# Runs on CPython (pytest): period reads by id range (day marks, migration 23) = a plain ts scan.
import random
import sqlite3
from datetime import date, datetime, timedelta

import pytest

from host.rules.engine import Tap
from host.store import day_marks, programme_reports, reports
from host.store.db import MIGRATIONS
from site_support import TZ, UID, make_site

START = datetime(2026, 2, 1, 9, 0, tzinfo=TZ)


def _plain(db, table, t0, t1=None):
    """The reference: the same four arguments with the id bounds opened (a ts scan)."""
    return 0, day_marks.NO_END, t0, day_marks.NO_END if t1 is None else t1


def _seed(db, admin, engine, clock, mid):
    """40 days of taps and top-ups; on day 20 the host clock runs 4 days ahead for a few taps
    and comes back (the marks of those days get stepped), and steps back an hour once."""
    rng = random.Random(19)
    seq = 0
    admin.topup(mid, 500_000)
    for day in range(40):
        base = START + timedelta(days=day)
        moments = sorted(base + timedelta(minutes=rng.randint(0, 14 * 60)) for _ in range(4))
        if day == 20:
            moments[1:3] = [base + timedelta(days=4, hours=1), base + timedelta(days=4, hours=2)]
        if day == 30:
            moments.append(moments[-1] - timedelta(hours=1))
        for i, when in enumerate(moments):
            clock.now = when
            seq += 1
            uid = UID if i % 3 else "04AABBCCDDEE01"    # an unknown card: a deny, no member
            engine.decide(Tap("K1", seq, uid, amount_fen=300 + 10 * i))
            if i == 0 and day % 5 == 0:
                admin.topup(mid, 1000)


@pytest.fixture()
def seeded(both_backends):
    db, admin, engine, clock, mid = make_site()
    _seed(db, admin, engine, clock, mid)
    return db, admin, engine, clock


def _ids(db, table, t0, t1, args):
    return [r[0] for r in db.execute(
        f"SELECT id FROM {table} WHERE {day_marks.span()} ORDER BY id", args)]


def test_id_ranges_find_exactly_the_rows_of_a_ts_scan(seeded):
    db = seeded[0]
    stepped = db.execute("SELECT count(*) FROM day_marks WHERE stepped = 1").fetchone()[0]
    assert stepped >= 1                     # the clock that ran ahead left stepped marks
    days = db.execute("SELECT count(*) FROM (SELECT ts / 86400 FROM taps UNION "
                      "SELECT ts / 86400 FROM ledger) AS d").fetchone()[0]
    assert db.execute("SELECT count(*) FROM day_marks").fetchone()[0] == days   # one a day
    rng = random.Random(7)
    lo_s, hi_s = int((START - timedelta(days=2)).timestamp()), int(
        (START + timedelta(days=46)).timestamp())
    windows = [(int((START + timedelta(days=d)).timestamp()),
                int((START + timedelta(days=d + n)).timestamp())) for d in range(-1, 45)
               for n in (1, 3)]
    windows += [tuple(sorted(rng.sample(range(lo_s, hi_s), 2))) for _ in range(150)]
    narrowed = 0
    for t0, t1 in windows:
        for table in ("taps", "ledger"):
            args = day_marks.span_args(db, table, t0, t1)
            want = [r[0] for r in db.execute(f"SELECT id FROM {table} WHERE ts >= ? AND ts < ? "
                                             "ORDER BY id", (t0, t1))]
            assert _ids(db, table, t0, t1, args) == want, (table, t0, t1, args)
            narrowed += args[1] < day_marks.NO_END
    assert narrowed > len(windows)          # most ranges have an upper bound, not a scan


@pytest.mark.parametrize("days", [1, 7, 40])
def test_reports_over_a_period_equal_a_plain_ts_scan(seeded, monkeypatch, days):
    db, admin, engine, clock = seeded
    pol = engine.policy
    now = START + timedelta(days=41)
    last = date(2026, 3, 12)

    def run():
        return (reports.daily(db, pol, last, days), reports.taps_by_hour(db, pol, last, days),
                reports.members(db, pol, now, days), reports.devices(db, pol, now, days),
                programme_reports.spend(db, pol, now, days),
                programme_reports.top_spenders(db, pol, now, days),
                programme_reports.campaigns(db, pol, now))

    by_marks = run()
    monkeypatch.setattr(reports, "span_args", _plain)
    monkeypatch.setattr(programme_reports, "span_args", _plain)
    assert run() == by_marks
    assert sum(r["taps"] for r in by_marks[0]) > 0


def test_migration_backfills_marks_of_existing_rows(tmp_path):
    """A store written before migration 23 (out-of-order ts included) gets marks whose
    ranges give a ts scan's rows, and the ts indexes are gone."""
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    for version, _name, sql in MIGRATIONS:
        if "day_marks" in sql:
            break
        conn.executescript(sql)
    conn.execute("INSERT INTO members (id, tier, created_at) VALUES (1, 'silver', 0)")
    rng = random.Random(3)
    day0 = 20_000 * 86400
    times = [day0 + i * 20_000 for i in range(60)]
    times[30:33] = [day0 + 40 * 86400, day0 + 40 * 86400 + 5, day0 + 2 * 86400]   # steps
    for i, ts in enumerate(times):
        conn.execute("INSERT INTO taps (ts, device_id, seq, uid, verdict, reason, relay_ms, "
                     "pattern, text, balance_fen, points, uses_left) VALUES "
                     "(?, 'K1', ?, 'AABBCCDD', 'deny', 'x', 0, 0, '', 0, 0, 0)", (ts, i))
        if rng.random() < 0.6:
            conn.execute("INSERT INTO ledger (ts, member_id, currency, delta, kind) "
                         "VALUES (?, 1, 'principal', 5, 'topup')", (ts + 1,))
    conn.executescript(next(sql for _v, name, sql in MIGRATIONS if name.startswith("day marks")))
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")}
    assert not {"taps_ts", "ledger_ts"} & names
    for d in range(-1, 42):
        for t0, t1 in ((day0 + d * 86400, day0 + (d + 1) * 86400),
                       (day0 + d * 86400 + 7000, day0 + (d + 2) * 86400 + 300)):
            for table in ("taps", "ledger"):
                args = day_marks.span_args(conn, table, t0, t1)
                want = [r[0] for r in conn.execute(f"SELECT id FROM {table} WHERE ts >= ? AND "
                                                   "ts < ? ORDER BY id", (t0, t1))]
                assert _ids(conn, table, t0, t1, args) == want, (table, d, args)
    conn.close()


def test_backfill_on_postgresql(db_url):
    """The backfill of migration 23 (window function, integer day numbers) on PostgreSQL:
    marks rebuilt from rows written with steps in ts give a ts scan's rows."""
    if not db_url.startswith("postgresql"):
        pytest.skip("the SQLite backfill is test_migration_backfills_marks_of_existing_rows")
    from host.store.db import _DAY_MARKS_SQL, open_db
    from host.store.dialect import translate_ddl

    db = open_db(db_url)
    conn = db.conn
    conn.execute("INSERT INTO members (id, tier, created_at) VALUES (1, 'silver', 0)")
    day0 = 20_000 * 86400
    times = [day0 + i * 30_000 for i in range(30)]
    times[10:12] = [day0 + 25 * 86400, day0 + 86400]
    for i, ts in enumerate(times):
        conn.execute("INSERT INTO taps (ts, device_id, seq, uid, verdict, reason, relay_ms, "
                     "pattern, text, balance_fen, points, uses_left) VALUES "
                     "(?, 'K1', ?, 'AABBCCDD', 'deny', 'x', 0, 0, '', 0, 0, 0)", (ts, i))
        conn.execute("INSERT INTO ledger (ts, member_id, currency, delta, kind) "
                     "VALUES (?, 1, 'principal', 5, 'topup')", (ts,))
    conn.execute("BEGIN")
    conn.execute("DROP TABLE day_marks")
    conn.execute_script(translate_ddl(_DAY_MARKS_SQL))
    conn.execute("COMMIT")
    assert db.execute("SELECT count(*) FROM day_marks WHERE stepped = 1").fetchone()[0] >= 1
    for d in range(-1, 27):
        t0, t1 = day0 + d * 86400, day0 + (d + 1) * 86400 + 3600
        for table in ("taps", "ledger"):
            args = day_marks.span_args(db, table, t0, t1)
            want = [r[0] for r in db.execute(f"SELECT id FROM {table} WHERE ts >= ? AND ts < ? "
                                             "ORDER BY id", (t0, t1))]
            assert _ids(db, table, t0, t1, args) == want, (table, d, args)
