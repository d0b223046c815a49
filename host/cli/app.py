# Runs on CPython (host): the operator CLI `tapkiosk` (members, cards, devices, money, reports).
"""``tapkiosk`` — the operator command line.

``main(argv) -> int`` is testable in-process. Global options: ``--db PATH`` (default: env
``TAPKIOSK_DB``, else ``~/.local/share/tapkiosk/site.db``), ``--policy PATH``, ``--json``.
Every refused request (bad input, unknown member, conflicting idempotency key, not enough
balance) prints one ``tapkiosk: error: ...`` line on stderr, exits 2 and writes nothing.
``verify`` exits 1 when a projection differs from the ledger.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import json
import os
import sqlite3
import sys
from datetime import date, datetime
from typing import Any, NoReturn

import sqlite_utils

from host.ledger import book as ledger

from host.store import reports

from host.secure import check as secure_policy
from host.admin import Admin
from host.admin.core import canonical_uid
from host.rules.engine import Engine, Tap
from host.errors import HostError, InputError, NotFound
from host.money import format_fen, parse_yuan
from host.rules.policy import Policy, load_policy
from host.store.db import default_db_path, open_db, schema_version
from host.store.devices import get_device, list_devices, register_device

#: Subcommands owned by other modules, imported only when used: name -> (module, function).
DELEGATED = {"daemon": "host.daemon", "flash": "tools.flash", "sim": "sim.cli",
             "demo": "sim.demo"}
_GLOBAL_WITH_VALUE = ("--db", "--policy")


class _Parser(argparse.ArgumentParser):
    """argparse that raises InputError (one line, exit 2) instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{message} (see: {self.prog} --help)")


def _int(text: str, what: str, lo: int = 1, hi: int = 2**62) -> int:
    if not (text.isascii() and text.isdigit()) or not lo <= int(text) <= hi:
        raise InputError(f"bad {what} {text!r}: expected a whole number {lo}..{hi}")
    return int(text)


def _member_arg(text: str) -> int:
    return _int(text, "member id")


def _money_arg(text: str) -> int:
    fen = parse_yuan(text)
    if fen <= 0:
        raise InputError(f"amount must be above 0.00, got {text!r}")
    return fen


def _date_arg(text: str) -> date:
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"bad date {text!r}: use YYYY-MM-DD") from None


def _build_parser() -> _Parser:
    p = _Parser(prog="tapkiosk", description="tapkiosk operator CLI",
                epilog="also: tapkiosk daemon|flash|sim|demo ... (each has its own --help): "
                       "the site daemon, the technician's flash tool, simulated readers, "
                       "the demo")
    p.add_argument("--db", help="site database (default: $TAPKIOSK_DB or the user data dir)")
    p.add_argument("--policy", help="policy TOML file (default: shipped defaults)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
    write = _Parser(add_help=False)
    write.add_argument("--idempotency-key", dest="key", metavar="KEY",
                       help="a repeat with the same key returns the first result")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    kw = dict(parents=[common])
    kww = dict(parents=[common, write])

    sub.add_parser("init", help="create or upgrade the database", **kw)

    site = sub.add_parser("site", help="site settings").add_subparsers(dest="sub",
                                                                       parser_class=_Parser)
    site.required = True
    s = site.add_parser("key", help="show (or --rotate) the site key for secure cards; "
                        "the key itself is never printed", **kw)
    s.add_argument("--rotate", action="store_true", help="add a new key version")

    member = sub.add_parser("member", help="members").add_subparsers(dest="sub",
                                                                     parser_class=_Parser)
    member.required = True
    m = member.add_parser("add", **kww)
    m.add_argument("--name", default="")
    m.add_argument("--phone")
    m.add_argument("--birthday", help="MM-DD or YYYY-MM-DD")
    m.add_argument("--tier", help="manual tier (logged); default: the policy's default tier")
    m.add_argument("--referrer", type=_member_arg, help="member id of the referrer")
    m = member.add_parser("show", **kw)
    m.add_argument("member", nargs="?", type=_member_arg)
    m.add_argument("--card", help="find the member by card UID")
    m = member.add_parser("list", **kw)
    m.add_argument("--tier")
    m.add_argument("--limit", type=lambda s: _int(s, "limit"), default=1000)
    m = member.add_parser("edit", **kww)
    m.add_argument("member", type=_member_arg)
    m.add_argument("--name")
    m.add_argument("--phone")
    m.add_argument("--birthday")
    m.add_argument("--tier", help="tier name (manual override) or 'auto'")
    m.add_argument("--status", choices=("active", "suspended"))

    card = sub.add_parser("card", help="cards").add_subparsers(dest="sub", parser_class=_Parser)
    card.required = True
    c = card.add_parser("enroll", help="MEMBER UID, or UID --member M [--secure --reader R]",
                        **kww)
    c.add_argument("first", metavar="MEMBER|UID")
    c.add_argument("second", nargs="?", metavar="UID")
    c.add_argument("--member", type=_member_arg, help="member id (then give only the UID)")
    c.add_argument("--secure", action="store_true",
                   help="personalise a blank NTAG 424 DNA on --reader (host/SECURE.md)")
    c.add_argument("--reader", help="nfcpy reader: usb, tty:USB0:pn532, udp:HOST:PORT, "
                   "or pn532:/dev/SERIAL")
    c.add_argument("--expires", type=_date_arg, help="YYYY-MM-DD (card refused from that day)")
    for name in ("block", "unblock"):
        c = card.add_parser(name, **kww)
        c.add_argument("uid")
    c = card.add_parser("replace", help="lost card: block OLD, move everything to NEW", **kww)
    c.add_argument("old_uid")
    c.add_argument("new_uid")

    device = sub.add_parser("device", help="devices").add_subparsers(dest="sub",
                                                                     parser_class=_Parser)
    device.required = True
    d = device.add_parser("add", **kw)
    d.add_argument("device_id")
    d.add_argument("kind", choices=("gate", "wash", "kiosk"))
    d.add_argument("--name")
    d.add_argument("--direction", choices=("in", "out", "both"))
    d.add_argument("--anti-passback", choices=("on", "off"))
    d.add_argument("--duplicate-window", type=lambda s: _int(s, "duplicate window", 0, 3600))
    d.add_argument("--hours", help="opening hours HH:MM-HH:MM")
    d.add_argument("--key", help="64 hex digits (default: a fresh random key)")
    device.add_parser("list", **kw)
    d = device.add_parser("key", help="print (or --rotate) the device's 32-byte key", **kw)
    d.add_argument("device_id")
    d.add_argument("--rotate", action="store_true")

    t = sub.add_parser("topup", help="add stored value (ladder bonus applies)", **kww)
    t.add_argument("member", type=_member_arg)
    t.add_argument("amount", type=_money_arg, help="yuan, e.g. 100.00")
    t = sub.add_parser("refund", help="refund principal (bonus is forfeited pro rata)", **kww)
    t.add_argument("member", type=_member_arg)
    t.add_argument("amount", nargs="?", type=_money_arg, help="yuan; omit with --all")
    t.add_argument("--all", action="store_true", help="refund all principal")

    ps = sub.add_parser("pass", help="passes").add_subparsers(dest="sub", parser_class=_Parser)
    ps.required = True
    t = ps.add_parser("sell", **kww)
    t.add_argument("member", type=_member_arg)
    t.add_argument("plan")
    t.add_argument("--from-balance", action="store_true", help="pay from stored value")
    ps.add_parser("plans", help="list the plans of the policy", **kw)

    pts = sub.add_parser("points", help="points").add_subparsers(dest="sub",
                                                                 parser_class=_Parser)
    pts.required = True
    t = pts.add_parser("redeem", **kww)
    t.add_argument("member", type=_member_arg)
    t.add_argument("points", type=lambda s: _int(s, "points"))
    g = t.add_mutually_exclusive_group(required=True)
    g.add_argument("--item", help="what the points buy")
    g.add_argument("--to-balance", action="store_true", help="convert to bonus balance")
    t = pts.add_parser("gift", **kww)
    t.add_argument("from_member", type=_member_arg)
    t.add_argument("to_member", type=_member_arg)
    t.add_argument("points", type=lambda s: _int(s, "points"))

    t = sub.add_parser("tap", help="run one tap through the engine", **kww)
    t.add_argument("device_id")
    t.add_argument("uid")
    t.add_argument("--service", type=lambda s: _int(s, "service code", 0, 255), default=0)
    t.add_argument("--amount", type=_money_arg, default=0, help="yuan (kiosk)")
    t.add_argument("--direction", choices=("in", "out"))

    rep = sub.add_parser("report", help="reports").add_subparsers(dest="sub",
                                                                  parser_class=_Parser)
    rep.required = True
    for name in ("daily", "members", "devices", "dormant"):
        r = rep.add_parser(name, **kw)
        r.add_argument("--csv", action="store_true")
        r.add_argument("--days", type=lambda s: _int(s, "days", 1, 3660))
        if name == "daily":
            r.add_argument("--date", type=_date_arg, help="last day (default: today)")

    lg = sub.add_parser("ledger", help="ledger entries").add_subparsers(dest="sub",
                                                                       parser_class=_Parser)
    lg.required = True
    t = lg.add_parser("reverse", help="correct an entry with a reversing entry", **kww)
    t.add_argument("entry_id", type=lambda s: _int(s, "ledger entry id"))
    t.add_argument("--reason", default="")
    t = lg.add_parser("list", **kw)
    t.add_argument("member", type=_member_arg)
    t.add_argument("--limit", type=lambda s: _int(s, "limit"), default=50)
    sub.add_parser("verify", help="recompute every projection from the ledger", **kw)
    sub.add_parser("expire", help="write off expired bonus and points lots now", **kww)
    e = sub.add_parser("export", help="dump every table as JSON", **kw)
    e.add_argument("--out", help="file to write (default: stdout)")
    e.add_argument("--with-keys", action="store_true", help="include device keys")
    return p


# ---------------------------------------------------------------------- output
def _show(value: Any, as_json: bool, out: io.TextIOBase) -> None:
    if as_json:
        out.write(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str) + "\n")
        return
    if isinstance(value, list):
        _table(value, out)
        return
    for k, v in value.items():
        if isinstance(v, (list, dict)):
            out.write(f"{k}:\n")
            if isinstance(v, list):
                _table(v, out, indent="  ")
            else:
                for kk, vv in v.items():
                    out.write(f"  {kk}: {_human(kk, vv)}\n")
        else:
            out.write(f"{k}: {_human(k, v)}\n")


_TZ: list[Any] = [None]  # the site time zone, for human-readable timestamps


def _human(key: str, v: Any) -> str:
    if key.endswith("_fen") and isinstance(v, int) and not isinstance(v, bool):
        return format_fen(v)
    if (key == "ts" or key.endswith("_at") or key == "last_seen") and isinstance(v, int) \
            and not isinstance(v, bool):
        if v == 0:
            return "never" if key == "expires_at" else "-"
        return datetime.fromtimestamp(v, _TZ[0]).strftime("%Y-%m-%d %H:%M")
    return "" if v is None else str(v)


def _table(rows: list[dict[str, Any]], out: io.TextIOBase, indent: str = "") -> None:
    if not rows:
        out.write(f"{indent}(none)\n")
        return
    cols = list(rows[0])
    cells = [[_human(c, r.get(c)) for c in cols] for r in rows]
    heads = [c[:-4] if c.endswith("_fen") else c for c in cols]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(heads)]
    out.write(indent + "  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip() + "\n")
    for row in cells:
        out.write(indent + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")


def _csv(rows: list[dict[str, Any]], out: io.TextIOBase) -> None:
    if not rows:
        return
    w = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (format_fen(v) if k.endswith("_fen") and isinstance(v, int) else v)
                    for k, v in r.items()})


# ---------------------------------------------------------------------- commands
def _member_view(db: Any, mid: int, policy: Policy) -> dict[str, Any]:
    try:
        m = db.table("members").get(mid)
    except sqlite_utils.db.NotFoundError:
        raise NotFound(f"unknown member {mid}") from None
    m["balance_fen"] = m["principal_fen"] + m["bonus_fen"]
    m["cards"] = [dict(r) for r in db.query(
        "SELECT uid, status, replaced_by FROM cards WHERE member_id = ? ORDER BY created_at",
        [mid])]
    m["passes"] = [dict(r) for r in db.query(
        "SELECT id, plan, kind, starts_at, ends_at, uses_left, daily_cap FROM passes "
        "WHERE member_id = ? ORDER BY id", [mid])]
    m["lots"] = [dict(r) for r in db.query(
        "SELECT currency, expires_at, remaining FROM lots WHERE member_id = ? AND remaining > 0"
        " ORDER BY currency, expires_at = 0, expires_at", [mid])]
    m["recent_taps"] = [dict(r) for r in db.query(
        "SELECT ts, device_id, verdict, reason, charged_fen, text FROM taps WHERE member_id = ?"
        " ORDER BY id DESC LIMIT 10", [mid])]
    return m


def _run(args: argparse.Namespace, out: io.TextIOBase) -> int:
    path = args.db or default_db_path()
    if args.cmd != "init" and path != ":memory:" and not os.path.exists(path):
        raise InputError(f"no database at {path}: run 'tapkiosk init' first (or pass --db)")
    policy = load_policy(args.policy)
    db = open_db(path)
    try:
        return _dispatch(args, db, policy, path, out)
    finally:
        db.conn.close()


def _dispatch(args: argparse.Namespace, db: Any, policy: Policy, path: str,
              out: io.TextIOBase) -> int:
    js = args.json
    _TZ[0] = policy.tz
    admin = Admin(db, policy)
    key = getattr(args, "key", None)
    cmd, sub = args.cmd, getattr(args, "sub", None)
    now = datetime.now(policy.tz)

    if cmd == "init":
        sk = secure_policy.ensure_site_key(db, int(now.timestamp()))
        _show({"db": path, "schema_version": schema_version(db),
               "site_key_version": sk["version"]}, js, out)
    elif cmd == "site":
        ts = int(now.timestamp())
        info = (secure_policy.rotate_site_key(db, ts) if args.rotate
                else secure_policy.ensure_site_key(db, ts))
        if not js:
            info["versions"] = " ".join(map(str, info["versions"]))
        _show(info, js, out)
    elif cmd == "member":
        if sub == "add":
            _show(admin.add_member(args.name, phone=args.phone, birthday=args.birthday,
                                   tier=args.tier, referrer_id=args.referrer, key=key), js, out)
        elif sub == "show":
            if (args.member is None) == (args.card is None):
                raise InputError("give a member id or --card UID")
            mid = args.member
            if args.card is not None:
                row = db.execute("SELECT member_id FROM cards WHERE uid = ?",
                                 (canonical_uid(args.card),)).fetchone()
                if row is None:
                    raise NotFound(f"unknown card {args.card}")
                mid = row[0]
            _show(_member_view(db, mid, policy), js, out)
        elif sub == "list":
            where, a = ("WHERE tier = ?", [args.tier]) if args.tier else ("", [])
            rows = [dict(r) for r in db.query(
                f"SELECT id, name, tier, status, principal_fen + bonus_fen AS balance_fen, "
                f"points FROM members {where} ORDER BY id LIMIT ?", a + [args.limit])]
            _show(rows, js, out)
        else:
            _show(admin.edit_member(args.member, name=args.name, phone=args.phone,
                                    birthday=args.birthday, tier=args.tier, status=args.status,
                                    key=key), js, out)
    elif cmd == "card":
        if sub == "enroll":
            exp = 0
            if args.expires:
                exp = int(datetime(args.expires.year, args.expires.month, args.expires.day,
                                   tzinfo=policy.tz).timestamp())
            if args.member is not None:
                if args.second is not None:
                    raise InputError("give UID --member M, or MEMBER UID (not both)")
                member, uid = args.member, args.first
            elif args.second is not None:
                member, uid = _member_arg(args.first), args.second
            else:
                raise InputError("give the member: UID --member M")
            if args.secure:
                if not args.reader:
                    raise InputError("--secure needs --reader (e.g. usb or tty:USB0:pn532)")
                from host.secure.enroll import enroll_secure, nfc_reader
                _show(enroll_secure(admin, member, uid, nfc_reader(args.reader),
                                    expires_at=exp, key=key), js, out)
            elif args.reader:
                raise InputError("--reader is only used with --secure")
            else:
                _show(admin.enroll_card(member, uid, expires_at=exp, key=key), js, out)
        elif sub in ("block", "unblock"):
            _show(admin.set_card_status(args.uid, "blocked" if sub == "block" else "active",
                                        key=key), js, out)
        else:
            _show(admin.replace_card(args.old_uid, args.new_uid, key=key), js, out)
    elif cmd == "device":
        if sub == "add":
            settings: dict[str, Any] = {}
            for name, val in (("name", args.name), ("direction", args.direction),
                              ("duplicate_window_s", args.duplicate_window),
                              ("hours", args.hours)):
                if val is not None:
                    settings[name] = val
            if args.anti_passback is not None:
                settings["anti_passback"] = args.anti_passback == "on"
            key_bytes = None
            if args.key is not None:
                try:
                    key_bytes = bytes.fromhex(args.key)
                except ValueError:
                    raise InputError("--key must be 64 hex digits") from None
            register_device(db, args.device_id, args.kind, key=key_bytes, **settings)
            _show(_device_view(get_device(db, args.device_id)), js, out)
        elif sub == "list":
            rows = [{k: d[k] for k in ("device_id", "kind", "name", "board_mac", "online",
                                       "last_seen", "last_seq", "fw")} for d in list_devices(db)]
            _show(rows, js, out)
        else:
            dev = get_device(db, args.device_id)
            if args.rotate:
                k = register_device(db, args.device_id, dev["kind"], rotate=True)
            else:
                from host.store.devices import device_key
                k = device_key(db, args.device_id)
            _show({"device_id": args.device_id, "key": k.hex(), "rotated": args.rotate}, js, out)
    elif cmd == "topup":
        _show(admin.topup(args.member, args.amount, key=key), js, out)
    elif cmd == "refund":
        if (args.amount is None) == (not args.all):
            raise InputError("give an amount or --all (not both)")
        _show(admin.refund(args.member, None if args.all else args.amount, key=key), js, out)
    elif cmd == "pass":
        if sub == "sell":
            _show(admin.sell_pass(args.member, args.plan, from_balance=args.from_balance,
                                  key=key), js, out)
        else:
            _show([{"plan": p.name, "kind": p.kind, "price_fen": p.price_fen,
                    "covers": " ".join(p.covers), "duration": p.duration, "uses": p.uses,
                    "daily_cap": p.daily_cap, "discount_pct": p.discount_pct}
                   for p in policy.plans.values()], js, out)
    elif cmd == "points":
        if sub == "redeem":
            _show(admin.redeem_points(args.member, args.points, item=args.item,
                                      to_balance=args.to_balance, key=key), js, out)
        else:
            _show(admin.gift_points(args.from_member, args.to_member, args.points, key=key),
                  js, out)
    elif cmd == "tap":
        get_device(db, args.device_id)
        tap = Tap(args.device_id, 0, canonical_uid(args.uid), service=args.service,
                  amount_fen=args.amount, direction=args.direction)
        engine = Engine(db, policy)
        d = engine.decide_local(tap, key=key)
        view = {"seq": engine.last_local_seq, "verdict": d.verdict, "reason": d.reason, "text": d.text,
                "relay_ms": d.relay_ms, "pattern": d.pattern, "balance_fen": d.balance_fen,
                "points": d.points, "uses_left": d.uses_left, "member_id": d.member_id,
                "replayed": d.replayed}
        _show(view, js, out)
    elif cmd == "report":
        if sub == "daily":
            rows = reports.daily(db, policy, args.date or now.date(), args.days or 7)
        elif sub == "members":
            rows = reports.members(db, policy, now, args.days or 30)
        elif sub == "devices":
            rows = reports.devices(db, policy, now, args.days or 1)
        else:
            rows = reports.dormant(db, policy, now, args.days)
        if args.csv:
            _csv(rows, out)
        else:
            _show(rows, js, out)
    elif cmd == "ledger":
        if sub == "reverse":
            _show(admin.reverse(args.entry_id, reason=args.reason, key=key), js, out)
        else:
            admin.member(db.conn, args.member)
            _show([dict(r) for r in db.query(
                "SELECT id, ts, currency, delta, kind, lot_id, pass_id, tap_id, reverses, note "
                "FROM ledger WHERE member_id = ? ORDER BY id DESC LIMIT ?",
                [args.member, args.limit])], js, out)
    elif cmd == "verify":
        problems = ledger.verify(db)
        n = db.execute("SELECT count(*) FROM ledger").fetchone()[0]
        _show({"ok": not problems, "ledger_rows": n, "problems": problems}, js, out)
        return 0 if not problems else 1
    elif cmd == "expire":
        _show(admin.expire(key=key), js, out)
    elif cmd == "export":
        data = _export(db, args.with_keys)
        text = json.dumps(data, ensure_ascii=False, sort_keys=True) + "\n"
        if args.out:
            try:
                with open(args.out, "x", encoding="utf-8") as f:
                    f.write(text)
            except OSError as e:
                raise InputError(f"cannot write {args.out}: {e.strerror}") from None
            _show({"out": args.out, "tables": {k: len(v) for k, v in data.items()}}, js, out)
        else:
            out.write(text)
    return 0


def _export(db: Any, with_keys: bool) -> dict[str, list[dict[str, Any]]]:
    data: dict[str, list[dict[str, Any]]] = {}
    for table in db.table_names():
        rows = []
        for r in db.query(f"SELECT * FROM [{table}] ORDER BY rowid"):
            r = dict(r)
            if table in ("devices", "site_keys") and not with_keys:
                r.pop("key", None)
            rows.append({k: (v.hex() if isinstance(v, bytes) else v) for k, v in r.items()})
        data[table] = rows
    return data


def _split_global(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """Split leading global options from a delegated subcommand and its own argv."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _GLOBAL_WITH_VALUE:
            i += 2
        elif a == "--json" or any(a.startswith(g + "=") for g in _GLOBAL_WITH_VALUE):
            i += 1
        else:
            break
    if i < len(argv) and argv[i] in DELEGATED:
        return argv[:i], argv[i], argv[i + 1:]
    return argv, None, []


def _global_values(head: list[str]) -> list[tuple[str, str | None]]:
    """The global options before a delegated subcommand as (option, value or None)."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(head):
        a = head[i]
        if a in _GLOBAL_WITH_VALUE:
            out.append((a, head[i + 1] if i + 1 < len(head) else None))
            i += 2
            continue
        opt, eq, val = a.partition("=")
        out.append((opt, val) if eq else (a, None))
        i += 1
    return out


def forward_globals(name: str, accepted: Any, head: list[str], rest: list[str]) -> list[str]:
    """The delegated command's argv with the global options given before it appended.

    ``accepted`` is the module's ``GLOBAL_OPTIONS``: the global options its command line
    takes (a tuple), or for a command with subcommands a dict subcommand -> tuple. An option
    the command was also given after its name is not forwarded (its own flag wins); one it
    does not take raises InputError rather than being dropped silently.
    """
    given = _global_values(head)
    if not given:
        return rest
    if isinstance(accepted, dict):
        sub = next((a for a in rest if not a.startswith("-")), None)
        where = f"{name} {sub}" if sub else name
        accepted = accepted.get(sub, ())
    else:
        where = name
    out = list(rest)
    for opt, val in given:
        if opt not in accepted:
            raise InputError(f"{opt} is not an option of 'tapkiosk {where}'")
        if any(a == opt or a.startswith(opt + "=") for a in rest):
            continue
        if opt in _GLOBAL_WITH_VALUE:
            if val is None:
                raise InputError(f"{opt} needs a value")
            out += [opt, val]
        else:
            out.append(opt)
    return out


def _device_view(dev: dict[str, Any]) -> dict[str, Any]:
    """A device for display: its settings once, under ``settings`` (``get_device`` also
    flattens them to the top level for the engine's convenience)."""
    return {k: v for k, v in dev.items() if k == "settings" or k not in dev["settings"]}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tapkiosk``: returns the exit code (0 ok, 1 verify found problems,
    2 refused request).

    Delegated subcommands (``daemon``, ``flash``, ``sim``, ``demo``) get the global options
    given before them (``tapkiosk --db X daemon ...``) when their module lists them in
    ``GLOBAL_OPTIONS``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    head, delegated, rest = _split_global(argv)
    if delegated is not None:
        modname = DELEGATED[delegated]
        try:
            mod = importlib.import_module(modname)
            fn = mod.main
        except (ImportError, AttributeError) as e:
            print(f"tapkiosk: error: '{delegated}' is not available ({modname}: {e})",
                  file=sys.stderr)
            return 2
        try:
            rest = forward_globals(delegated, getattr(mod, "GLOBAL_OPTIONS", ()), head, rest)
        except InputError as e:
            print(f"tapkiosk: error: {e}", file=sys.stderr)
            return e.exit_code
        return fn(rest)
    try:
        args = _build_parser().parse_args(argv)
        return _run(args, sys.stdout)
    except BrokenPipeError:  # `tapkiosk ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except HostError as e:
        msg = " ".join(str(e).split())
        print(f"tapkiosk: error: {msg}", file=sys.stderr)
        return e.exit_code
    except sqlite3.Error as e:
        print(f"tapkiosk: error: database: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
