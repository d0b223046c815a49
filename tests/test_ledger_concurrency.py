# Runs on CPython (pytest): two processes hammer one card — no double spend, no double apply.
import subprocess
import sys
import textwrap
from pathlib import Path

from host.ledger import book as ledger
from host.admin import Admin
from host.privacy import keyfile
from host.store.db import open_db
from host.store.devices import register_device

ROOT = Path(__file__).resolve().parents[1]
UID = "04A1B2C3D4E5F6"

WORKER = textwrap.dedent("""
    import sys
    from host.rules.engine import Engine, Tap
    from host.store.db import open_db
    db_path, device, first, count, amount = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    engine = Engine(open_db(db_path))
    grants = 0
    for seq in range(first, first + count):
        d = engine.decide(Tap(device, seq, "%s", amount_fen=amount))
        if d.verdict == "grant" and not d.replayed:
            grants += 1
        assert d.balance_fen >= 0
    print(grants)
""" % UID)


def _site(path, balance_fen):
    db = open_db(path)
    if not path.startswith("postgresql://"):
        keyfile.create(f"{path}.key")  # what `tapkiosk init` makes
    admin = Admin(db)
    for dev in ("K1", "K2"):
        register_device(db, dev, "kiosk")
    mid = admin.add_member("Race", consent_terms="t1")["member_id"]
    admin.enroll_card(mid, UID)
    admin.topup(mid, balance_fen)
    return path, db, mid


def _run_pair(path, jobs):
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(path), *map(str, job)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for job in jobs]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    return [int(out) for out, _ in outs]


def test_two_processes_cannot_double_spend(db_url):
    # 100.00 of principal (no ladder bonus below 200.00); a tap costs 10.00 at tier price
    # (9.50 silver, 8.80 once upgraded to gold after three purchases).
    path, db, mid = _site(db_url, 10_000)
    grants = _run_pair(path, [("K1", 1, 60, 1000), ("K2", 1, 60, 1000)])
    db2 = open_db(path)
    bal = ledger.balances(db2.conn, mid)
    left = bal["principal_fen"] + bal["bonus_fen"]
    charged, n = db2.execute("SELECT sum(charged_fen), count(*) FROM taps "
                             "WHERE verdict = 'grant'").fetchone()
    assert n == sum(grants) and min(grants) >= 0
    assert left == 10_000 - charged and 0 <= left < 880   # spent down, never below zero
    denied = db2.execute("SELECT DISTINCT reason FROM taps WHERE verdict = 'deny'").fetchall()
    assert denied == [("insufficient_balance",)]
    assert db2.execute("SELECT count(*) FROM taps").fetchone()[0] == 120
    assert ledger.verify(db2) == []


def test_two_processes_same_seqs_apply_once(db_url):
    path, db, mid = _site(db_url, 100_000)
    # 10.00 a tap: above tier_rules.min_purchase, so every applied tap is a qualifying purchase.
    grants = _run_pair(path, [("K1", 1, 80, 1000), ("K1", 1, 80, 1000)])
    db2 = open_db(path)
    assert sum(grants) == 80                              # each seq applied by exactly one
    assert db2.execute("SELECT count(*) FROM taps").fetchone()[0] == 80
    bal = ledger.balances(db2.conn, mid)
    charged = db2.execute("SELECT sum(charged_fen) FROM taps").fetchone()[0]
    assert bal["principal_fen"] + bal["bonus_fen"] == 100_000 + 15_000 - charged
    assert db2.execute("SELECT count(*) FROM ledger WHERE currency = 'qualifying'"
                       ).fetchone()[0] == 80
    assert ledger.verify(db2) == []
