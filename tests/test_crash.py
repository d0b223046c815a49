# Runs on CPython (pytest): SIGKILL a process mid-stream of taps, repeatedly; nothing decided is lost.
import os
import random
import signal
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
    engine = Engine(open_db(sys.argv[1]))
    seq = int(sys.argv[2])
    while True:
        d = engine.decide(Tap("K1", seq, "%s", amount_fen=100 + seq %% 7))
        sys.stdout.write(f"{seq} {d.verdict} {d.balance_fen} {int(d.replayed)}\\n")
        sys.stdout.flush()
        seq += 1
""" % UID)


def test_sigkill_mid_stream_loses_no_decided_tap(tmp_path):
    path = tmp_path / "site.db"
    db = open_db(path)
    keyfile.create(f"{path}.key")  # what `tapkiosk init` makes
    register_device(db, "K1", "kiosk")
    admin = Admin(db)
    mid = admin.add_member("Crash", consent_terms="t1")["member_id"]
    admin.enroll_card(mid, UID)
    admin.topup(mid, 1_000_000)
    db.conn.close()
    rng = random.Random(1234)
    decided: dict[int, tuple[str, int]] = {}
    next_seq, replays = 1, 0
    for _round in range(8):
        p = subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(next_seq)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        target = rng.randint(5, 40)
        for _ in range(target):
            line = p.stdout.readline()
            assert line, p.stderr.read()
            seq, verdict, balance, replayed = line.split()
            decided.setdefault(int(seq), (verdict, int(balance)))
            replays += int(replayed)
            next_seq = int(seq) + 1
        os.kill(p.pid, signal.SIGKILL)    # in the middle of the next tap (or its commit)
        p.wait()
        p.stdout.close()
        p.stderr.close()
        check = open_db(path)
        rows = dict((s, (v, b)) for s, v, b in check.execute(
            "SELECT seq, verdict, balance_fen FROM taps WHERE device_id = 'K1'"))
        for seq, want in decided.items():
            assert rows.get(seq) == want, f"decided tap {seq} lost or changed"
        assert ledger.verify(check) == []
        check.conn.close()
    final = open_db(path)
    assert len(decided) >= 8 * 5
    charged = final.execute("SELECT sum(charged_fen) FROM taps").fetchone()[0]
    bal = ledger.balances(final.conn, mid)
    assert bal["principal_fen"] + bal["bonus_fen"] == 1_000_000 + 15_000 - charged
    # seqs are gap-free up to the last decided one: a resend after a kill replays, never re-applies
    seqs = [r[0] for r in final.execute("SELECT seq FROM taps ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))
