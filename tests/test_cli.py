# Runs on CPython (pytest): the tapkiosk CLI in-process — outputs, exit codes, nothing written on errors.
import csv
import io
import json

import pytest

from host.cli.app import main
from host.store.db import open_db

UID = "04A1B2C3D4E5F6"


@pytest.fixture
def run(db_url, site_cli):
    """The CLI on a new site, on SQLite and on PostgreSQL."""
    return site_cli


def j(run, *argv):
    code, out, err = run("--json", *argv)
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def member(run):
    assert j(run, "member", "add", "--consent-terms", "t1", "--name", "Li", "--birthday", "01-02")["member_id"] == 1
    j(run, "card", "enroll", "1", UID.lower())
    j(run, "device", "add", "K1", "kiosk")
    return 1


def snapshot(run):
    return run("export")[1]


def test_init_and_missing_db(tmp_path, capsys):
    assert main(["--db", str(tmp_path / "nope.db"), "member", "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tapkiosk init" in err
    assert not (tmp_path / "nope.db").exists()


@pytest.mark.parametrize("amount", ["12.505", "-1", "1e3", "nan", "", "0", "0.00", "１２"])
def test_bad_money_exits_2_and_writes_nothing(run, member, amount):
    before = snapshot(run)
    code, out, err = run("topup", "1", amount)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("tapkiosk: error:")
    assert snapshot(run) == before


@pytest.mark.parametrize("argv", [
    ["topup", "x", "10"], ["topup", "99", "10"], ["card", "enroll", "1", "XYZ"],
    ["member", "add", "--consent-terms", "t1", "--birthday", "02-30"], ["member", "edit", "1", "--tier", "platinum"],
    ["device", "add", "bad id!", "kiosk"], ["device", "add", "W1", "wash", "--direction", "in"],
    ["pass", "sell", "1", "nosuch"], ["points", "redeem", "1", "10", "--item", "cup"],
    ["refund", "1", "5.00"], ["points", "gift", "1", "1", "5"], ["tap", "NOPE", UID],
    ["report", "daily", "--date", "2026-13-01"], ["bogus"], ["member", "show"],
])
def test_refused_requests_exit_2_one_line_nothing_written(run, member, argv):
    before = snapshot(run)
    code, out, err = run(*argv)
    assert code == 2, (argv, err)
    assert err.count("\n") == 1 and err.startswith("tapkiosk: error:")
    assert snapshot(run) == before


def test_topup_idempotency_key(run, member):
    first = j(run, "topup", "1", "500.00", "--idempotency-key", "k-1")
    again = j(run, "topup", "1", "500.00", "--idempotency-key", "k-1")
    assert first["replayed"] is False and again["replayed"] is True
    assert {k: v for k, v in first.items() if k != "replayed"} == \
        {k: v for k, v in again.items() if k != "replayed"}
    assert first["balance_fen"] == 50000 + 6000
    code, _, err = run("topup", "1", "100.00", "--idempotency-key", "k-1")
    assert code == 2 and "another request" in err
    assert j(run, "member", "show", "1")["balance_fen"] == 56000


def test_tap_uses_fresh_negative_seqs_and_engine(run, member):
    j(run, "topup", "1", "100.00")
    d1 = j(run, "tap", "K1", UID, "--amount", "10.00")
    d2 = j(run, "tap", "K1", UID, "--amount", "10.00")
    assert (d1["seq"], d2["seq"]) == (-1, -2)
    assert d1["verdict"] == "grant" and d1["balance_fen"] == 10000 - 950
    assert d2["balance_fen"] == 10000 - 1900
    d3 = j(run, "tap", "K1", UID, "--amount", "1000.00")
    assert (d3["verdict"], d3["reason"]) == ("deny", "insufficient_balance")


def test_tap_retried_with_its_idempotency_key_charges_once(run, member):
    j(run, "topup", "1", "100.00")
    d1 = j(run, "tap", "K1", UID, "--amount", "10.00", "--idempotency-key", "pos-7")
    d2 = j(run, "tap", "K1", UID, "--amount", "10.00", "--idempotency-key", "pos-7")
    assert d1["replayed"] is False and d2["replayed"] is True
    assert d1["seq"] == d2["seq"] == -1
    assert d1["balance_fen"] == d2["balance_fen"] == 10000 - 950
    before = snapshot(run)
    code, _out, err = run("tap", "K1", UID, "--amount", "20.00", "--idempotency-key", "pos-7")
    assert code == 2 and "pos-7" in err and err.count("\n") == 1
    code, _out, err = run("topup", "1", "1.00", "--idempotency-key", "pos-7")
    assert code == 2 and "pos-7" in err
    assert snapshot(run) == before
    assert j(run, "member", "show", "1")["balance_fen"] == 10000 - 950


def test_card_replace_blocks_old(run, member):
    j(run, "topup", "1", "50.00")
    r = j(run, "card", "replace", UID, "04A1B2C3D4E5F7")
    assert r["balance_fen"] == 5000
    assert j(run, "tap", "K1", UID, "--amount", "1.00")["reason"] == "lost"
    assert j(run, "tap", "K1", "04A1B2C3D4E5F7", "--amount", "1.00")["verdict"] == "grant"
    assert j(run, "member", "show", "--card", UID)["id"] == 1


def test_verify_detects_tampering(run, member, tmp_path):
    j(run, "topup", "1", "50.00")
    assert run("verify")[0] == 0
    db = open_db(run.db)
    db.execute("UPDATE members SET principal_fen = principal_fen + 1")
    db.conn.close()
    code, out, _ = run("--json", "verify")
    assert code == 1
    assert "member 1 principal: projection 5001, ledger 5000" in json.loads(out)["problems"]


def test_ledger_is_append_only(run, member, tmp_path):
    j(run, "topup", "1", "50.00")
    j(run, "tap", "K1", UID, "--amount", "1.00")
    import sqlite3
    conn = open_db(run.db).conn
    for sql in ("UPDATE ledger SET delta = 1", "DELETE FROM ledger", "DELETE FROM taps"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    conn.close()


def test_device_key_is_32_bytes_and_rotates(run):
    j(run, "device", "add", "G1", "gate", "--direction", "in", "--hours", "06:00-22:00")
    k1 = j(run, "device", "key", "G1", "--show")["key"]
    assert len(bytes.fromhex(k1)) == 32
    assert j(run, "device", "key", "G1", "--show")["key"] == k1
    rotated = j(run, "device", "key", "G1", "--rotate")
    assert "key" not in rotated and rotated["rotated"] is True
    k2 = j(run, "device", "key", "G1", "--show")["key"]
    assert k2 != k1 and len(bytes.fromhex(k2)) == 32
    dev = j(run, "device", "list")
    assert [d["device_id"] for d in dev] == ["G1"]


def test_device_key_is_not_printed_without_show(run):
    j(run, "device", "add", "G1", "gate")
    code, out, err = run("device", "key", "G1")
    assert code == 2 and out == "" and "--show" in err


def test_device_replace_starts_a_new_key_and_epoch(run, tmp_path):
    from host.store.devices import device_key
    j(run, "device", "add", "G1", "gate")
    db = open_db(run.db)
    old_key = device_key(db, "G1")
    db.execute("UPDATE devices SET last_seq = 131077, resend_floor = 131070, down_seq = 196608,"
               " board_mac = '24:6f:28:aa:bb:cc' WHERE device_id = 'G1'")
    out = j(run, "device", "replace", "G1")
    assert out["device_id"] == "G1" and old_key.hex() not in str(out)
    row = db.execute("SELECT key, last_seq, resend_floor, down_seq, seq_base, board_mac "
                     "FROM devices WHERE device_id = 'G1'").fetchone()
    assert bytes(row[0]) != old_key
    assert row[1:4] == (0, 0, 0) and row[5] is None
    assert row[4] > 131077      # the new epoch's stored seqs sit above the old ones
    assert run("device", "replace", "NOPE")[0] != 0
    db.conn.close()


def test_reports_csv_and_json(run, member):
    j(run, "member", "add", "--consent-terms", "t1", "--name", "Wang")
    j(run, "topup", "1", "200.00")
    j(run, "tap", "K1", UID, "--amount", "10.00")
    j(run, "tap", "K1", UID, "--amount", "10.00")
    j(run, "points", "redeem", "1", "9", "--item", "cup")
    code, out, _ = run("report", "daily", "--days", "1", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 1
    r = rows[0]
    assert r["topups_fen"] == "200.00" and r["consumption_fen"] == "19.00"
    assert r["activity_rate"] == "0.5" and r["repurchase_rate"] == "1.0"
    assert r["points_issued"] == "18" and r["points_redeemed"] == "9"
    assert r["points_redemption_rate"] == "0.5"
    m = j(run, "report", "members")
    assert m[-1]["tier"] == "total" and m[-1]["members"] == 2
    devs = j(run, "report", "devices")
    assert devs[0]["taps"] == 2 and devs[0]["charged_fen"] == 1900
    assert j(run, "report", "dormant") == []


def test_delegated_commands_missing_module(capsys):
    assert main(["sim", "--x"]) in (0, 1, 2)
    code = main(["--db", ":memory:", "demo-not-a-command"])
    assert code == 2


def test_refund_forfeits_bonus_pro_rata(run, member):
    j(run, "topup", "1", "200.00")           # +20.00 bonus
    r = j(run, "refund", "1", "100.00")
    assert (r["refunded_fen"], r["bonus_forfeited_fen"]) == (10000, 1000)
    r = j(run, "refund", "1", "--all")
    assert r["balance_fen"] == 0 and r["bonus_forfeited_fen"] == 1000


def test_ledger_reverse_is_a_new_entry(run, member):
    j(run, "topup", "1", "200.00")                 # entries 1 (principal) and 2 (bonus)
    rows = j(run, "ledger", "list", "1")
    bonus = [r for r in rows if r["currency"] == "bonus"][0]
    r = j(run, "ledger", "reverse", str(bonus["id"]), "--reason", "keyed twice")
    assert r["bonus_fen"] == 0 and r["principal_fen"] == 20000
    code, _, err = run("ledger", "reverse", str(bonus["id"]))
    assert code == 2 and "already reversed" in err
    code, _, err = run("ledger", "reverse", str(r["entry_id"]))
    assert code == 2 and "itself a reversal" in err
    j(run, "tap", "K1", UID, "--amount", "150.00")  # spends 142.50 of the principal
    principal = [x for x in j(run, "ledger", "list", "1") if x["kind"] == "topup"][0]
    code, _, err = run("ledger", "reverse", str(principal["id"]))
    assert code == 2 and "already spent" in err
    assert run("verify")[0] == 0
    assert len(j(run, "ledger", "list", "1")) == 6


def test_global_db_and_policy_reach_delegated_commands(tmp_path, monkeypatch, capsys):
    """``tapkiosk --db X daemon ...`` runs the daemon on X (the global options are forwarded
    to the delegated command; its own flag wins; one it does not take is refused)."""
    import host.daemon
    import tools.flash
    from host.site.config import load_config

    seen = {}

    def fake_daemon(argv):
        cfg = load_config(argv)
        seen["daemon"] = (cfg.db, cfg.policy, argv)
        return 0

    monkeypatch.setattr(host.daemon, "main", fake_daemon)
    monkeypatch.setattr(tools.flash, "main", lambda argv: seen.__setitem__("flash", argv) or 0)
    db, pol = str(tmp_path / "x.db"), str(tmp_path / "p.toml")
    assert main(["--db", db, f"--policy={pol}", "daemon", "--mqtt", "127.0.0.1:1"]) == 0
    assert seen["daemon"][:2] == (db, pol)
    assert main(["--db", db, "daemon", "--db", "own.db", "--mqtt", "127.0.0.1:1"]) == 0
    assert seen["daemon"][0] == "own.db"
    assert main(["--db", db, "flash", "update", "--port", "/dev/null"]) == 0
    assert seen["flash"] == ["update", "--port", "/dev/null", "--db", db]
    assert main(["--db", db, "flash", "ports"]) == 2
    assert "--db is not an option of 'tapkiosk flash ports'" in capsys.readouterr().err
    assert main(["flash", "ports"]) == 0 and seen["flash"] == ["ports"]


def _leaf_commands(parser) -> set[str]:
    """Every command the parser accepts, as its words (``"member add"``)."""
    import argparse

    def subs(p):
        return next((a.choices for a in p._actions
                     if isinstance(a, argparse._SubParsersAction)), None)
    names = set()
    for name, p in subs(parser).items():
        inner = subs(p)
        names |= {f"{name} {s}" for s in inner} if inner else {name}
    return names


def test_every_command_has_one_handler():
    from host.cli.app import COMMANDS, build_parser

    assert _leaf_commands(build_parser()) == set(COMMANDS)


def test_times_print_in_the_zone_of_the_policy_given(run, member, tmp_path):
    """Two runs in one process with different site zones: each prints in its own zone (the
    zone is passed to the printer, not kept between runs)."""
    utc = tmp_path / "utc.toml"
    utc.write_text('[site]\ntimezone = "UTC"\n')
    j(run, "topup", "1", "10.00")
    ts = j(run, "ledger", "list", "1")[0]["ts"]
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    for policy, zone in ((None, ZoneInfo("Asia/Shanghai")), (str(utc), timezone.utc)):
        code, out, err = run(*(["--policy", policy] if policy else []), "ledger", "list", "1")
        assert code == 0, err
        assert datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M") in out
