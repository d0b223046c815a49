# Runs on CPython (host): `make demo` / `tapkiosk demo` — a site, the real daemon and three simulated readers, one scripted visit.
"""``tapkiosk demo`` (``make demo``, ``python -m sim.demo``): tapkiosk end to end in under a minute.

No broker and no hardware needed. In a temporary site directory it:

1. creates the site database and seeds members (one per tier, a wash pass, a punch card, a
   blocked card, a low balance) with the same operator API ``tapkiosk`` uses;
2. starts the real daemon (``python -m host.daemon``) with the metrics endpoint on;
3. starts three readers — gym gate ``gate-1``, car-wash bay ``wash-1``, kiosk ``kiosk-1`` —
   each the real ``firmware/`` under the MicroPython unix port reading an emulated PN532,
   linked to the daemon by a simulated serial cable (``--mqtt HOST:PORT``: by a broker);
4. places and removes virtual cards on the emulators and prints each decision as the daemon
   stored it (``taps`` table), with what the reader did (LED, relay; from its pins log);
5. prints the day's report and runs ``verify``.

The kiosk sells one item at a fixed price (its ``amount`` setting, 30.00): the firmware sends
the amount from its configuration with every tap.

Options: ``--keep`` keeps the site directory, ``--stay`` keeps everything running afterwards
so you can tap cards yourself (``tapkiosk sim tap ...``), ``--json`` prints one JSON object
per tap and a summary. Exit 0 when every tap got the expected decision and verify passed.
Ctrl-C (or SIGTERM) at any point stops every process it started and removes the directory.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from protocol.compat import ticks_ms

ROOT = Path(__file__).resolve().parent.parent
#: Global ``tapkiosk`` options forwarded here (``tapkiosk --json demo``).
GLOBAL_OPTIONS = ("--json",)
KIOSK_PRICE_FEN = 3000
WASH_PROGRAM = 1

# Seeded members: (card UID, name, tier, what the operator sets up).
ANN, BEN, CAI, DEE, EVE, FAY, GUS = ("04A1B2C3D4E5F6", "04B1B2C3D4E5F6", "04C1B2C3D4E5F6",
                                     "04D1B2C3D4E5F6", "04E1B2C3D4E5F6", "04F1B2C3D4E5F6",
                                     "5A6B7C8D")
STRANGER = "04991122334455"
MEMBERS = (
    (ANN, "Ann", "silver", "gym_month pass (cash)"),
    (BEN, "Ben", "gold", "top-up 100.00"),
    (CAI, "Cai", "silver", "wash_month pass (cash)"),
    (DEE, "Dee", "diamond", "top-up 200.00 (+20.00 bonus)"),
    (EVE, "Eve", "silver", "wash10 punch card (cash)"),
    (FAY, "Fay", "silver", "card blocked by the operator"),
    (GUS, "Gus", "silver", "top-up 5.00"),
)
DEVICES = (("gate-1", "gate"), ("wash-1", "wash"), ("kiosk-1", "kiosk"))


@dataclass(frozen=True)
class Step:
    """One scripted tap of the demo: the card, the reader and the answer expected."""

    scene: str
    device: str
    card: str
    verdict: str
    reason: str
    not_before_s: float = 0.0  # seconds after the first tap (the gate's duplicate window is 5 s)


SCRIPT = (
    Step("gym entry with a month pass", "gate-1", ANN, "grant", "ok"),
    Step("wash paid by a month pass", "wash-1", CAI, "grant", "ok"),
    Step("wash from balance, gold price", "wash-1", BEN, "grant", "ok"),
    Step("wash from a punch card", "wash-1", EVE, "grant", "ok"),
    Step("kiosk purchase, points earned", "kiosk-1", DEE, "grant", "ok"),
    Step("blocked card at the gate", "gate-1", FAY, "deny", "blocked"),
    Step("kiosk purchase, balance too low", "kiosk-1", GUS, "deny", "insufficient_balance"),
    Step("unknown card at the gate", "gate-1", STRANGER, "deny", "unknown_card"),
    Step("Ann's card passed back to a friend", "gate-1", ANN, "deny", "passback",
         not_before_s=6.0),
)


class DemoError(Exception):
    """The demo could not run (a process did not start, a reader stayed offline)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


def seed(db_path: Path) -> dict[str, bytes]:
    """Create the site: devices (returns their keys) and the members of MEMBERS."""
    from host.admin import Admin
    from host.privacy import keyfile
    from host.rules.policy import load_policy
    from host.store.db import open_db
    from host.store.devices import register_device

    db = open_db(db_path)
    keyfile.create(keyfile.key_path(str(db_path)))  # members' names are sealed with it
    try:
        keys = {dev: register_device(db, dev, kind, name=f"demo {kind}") for dev, kind in DEVICES}
        admin = Admin(db, load_policy())
        for uid, name, tier, _what in MEMBERS:
            mid = admin.add_member(name, tier=None if tier == "silver" else tier,
                                   consent_terms="demo")["member_id"]
            admin.enroll_card(mid, uid)
            if uid == ANN:
                admin.sell_pass(mid, "gym_month")
            elif uid == BEN:
                admin.topup(mid, 10000)
            elif uid == CAI:
                admin.sell_pass(mid, "wash_month")
            elif uid == DEE:
                admin.topup(mid, 20000)
            elif uid == EVE:
                admin.sell_pass(mid, "wash10")
            elif uid == FAY:
                admin.topup(mid, 5000)
                admin.set_card_status(uid, "blocked")
            elif uid == GUS:
                admin.topup(mid, 500)
        return keys
    finally:
        db.conn.close()


class Demo:
    """Everything the demo starts, stopped by ``close()`` whatever happened."""

    def __init__(self, site: Path, mqtt: str | None, say: TextIO) -> None:
        self.site = site
        self.db = site / "site.db"
        self.mqtt = mqtt
        self.say = say
        self.daemon: subprocess.Popen | None = None
        self.daemon_log = site / "daemon.log"
        self.readers: dict[str, Any] = {}
        self.control: Any = None
        self.metrics_url = ""
        self.staying = False  # --stay: the script is over, waiting for Ctrl-C
        self._log_fh: Any = None

    def _print(self, text: str = "", end: str = "\n") -> None:
        self.say.write(text + end)
        self.say.flush()

    def start(self, keys: dict[str, bytes]) -> None:
        """Start the daemon and one virtual reader per device (``keys``: device id -> key)."""
        from sim.cli import VirtualReader, child_popen_kw

        kinds = dict(DEVICES)
        for dev, key in keys.items():
            self.readers[dev] = VirtualReader(
                self.site / "boards" / dev, dev, kinds[dev], key, mqtt=self.mqtt,
                service=WASH_PROGRAM if kinds[dev] == "wash" else 0,
                amount_fen=KIOSK_PRICE_FEN if kinds[dev] == "kiosk" else 0)
        link: list[str] = []
        if self.mqtt:
            link = ["--mqtt", self.mqtt, "--mqtt-client-id", f"tapkiosk-demo-{os.getpid()}"]
        else:
            for r in self.readers.values():
                link += ["--serial", r.serial_url]
        self._print("starting the daemon ... ", end="")
        self._log_fh = open(self.daemon_log, "ab")
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "host.daemon", "--db", str(self.db), *link,
             "--metrics-port", "0", "--log-level", "info", "--http", "127.0.0.1:0"],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self._log_fh, stderr=self._log_fh,
            **child_popen_kw())
        deadline = time.monotonic() + 30
        while "daemon ready" not in self._daemon_log():
            if self.daemon.poll() is not None:
                raise DemoError("the daemon stopped: " + self._daemon_log()[-800:])
            if time.monotonic() > deadline:
                raise DemoError("the daemon did not start in 30 s: " + self._daemon_log()[-800:])
            time.sleep(0.05)
        m = re.search(r"metrics on (http://\S+/metrics)", self._daemon_log())
        self.metrics_url = m.group(1) if m else ""
        self._print(f"ready{f' (metrics on {self.metrics_url})' if self.metrics_url else ''}")
        names = ", ".join(f"{d} ({r.kind})" for d, r in self.readers.items())
        self._print(f"booting {names} ... ", end="")
        t0 = time.monotonic()
        for r in self.readers.values():
            r.start()
        for dev, r in self.readers.items():
            if not r.wait_online(45):
                raise DemoError(f"{dev} did not come online; its console:\n"
                                + "\n".join(r.board.output()[-15:]))
        self._print(f"online in {time.monotonic() - t0:.1f} s")

    def _daemon_log(self) -> str:
        try:
            return self.daemon_log.read_text(errors="replace")
        except OSError:
            return ""

    def play(self, step: Step, t_first: float | None) -> dict[str, Any]:
        """Tap one card and return the decided row (plus what the reader showed)."""
        from sim.cli import last_tap_id, wait_tap

        if t_first is not None and step.not_before_s:
            time.sleep(max(0.0, t_first + step.not_before_s - time.monotonic()))
        r = self.readers[step.device]
        r.wait_idle()  # the previous member's green or red is over
        before = last_tap_id(str(self.db))
        mark = ticks_ms()
        r.place(step.card)
        try:
            row = wait_tap(str(self.db), step.device, before, 20)
            if row is None:
                raise DemoError(f"no decision for {step.card} on {step.device} in 20 s; daemon "
                                f"log:\n{self._daemon_log()[-1500:]}")
            fb: dict[str, Any] = {}
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                fb = r.feedback_since(mark)
                if fb["led"] and (fb["relay"] or row["verdict"] != "grant" or
                                  row["relay_ms"] == 0 or time.monotonic() > deadline - 1.5):
                    break
                time.sleep(0.02)
        finally:
            r.remove()
        out = {"scene": step.scene, "device": step.device, "card": step.card,
               "member": row["member"], "verdict": row["verdict"], "reason": row["reason"],
               "text": row["text"], "charged_fen": row["charged_fen"],
               "balance_fen": row["balance_fen"], "points": row["points"],
               "points_earned": row["points_earned"], "uses_left": row["uses_left"],
               "relay_ms": row["relay_ms"], "host_ms": row["latency_ms"],
               "led": fb.get("led", ""), "relay": fb.get("relay", False),
               "card_to_led_ms": fb.get("ms"),
               "expected": [step.verdict, step.reason]}
        out["ok"] = (out["verdict"], out["reason"]) == (step.verdict, step.reason)
        return out

    def stop_readers(self) -> None:
        """Close the control channel and every virtual reader."""
        if self.control is not None:
            self.control.close()
            self.control = None
        for r in self.readers.values():
            r.close()

    def stop_daemon(self) -> int | None:
        """Stop the daemon; its exit code, or None when it was not running."""
        from sim.cli import stop_process

        if self.daemon is not None:
            stop_process(self.daemon, term_timeout=15)
            rc = self.daemon.returncode
            self.daemon = None
            if self._log_fh is not None:
                self._log_fh.close()
                self._log_fh = None
            return rc
        return None

    def close(self) -> None:
        """Stop the readers, then the daemon."""
        self.stop_readers()
        self.stop_daemon()


# ---------------------------------------------------------------------- output
COLUMNS = (("#", 2, ">"), ("scene", 34, "<"), ("device", 7, "<"), ("member", 13, "<"),
           ("verdict", 7, "<"), ("reason", 20, "<"), ("balance", 8, ">"), ("points", 6, ">"),
           ("reader", 17, "<"), ("ms", 4, ">"))


def _fmt_row(cells: list[str]) -> str:
    return "  ".join(f"{c:{a}{w}}" for c, (_n, w, a) in zip(cells, COLUMNS)).rstrip()


def table_header() -> str:
    """The demo table's header line and its underline."""
    head = _fmt_row([n for n, _w, _a in COLUMNS])
    return head + "\n" + "-" * len(head)


def table_row(n: int, row: dict[str, Any], tiers: dict[str, str]) -> str:
    """One line of the demo table for step ``n`` (``tiers``: card -> tier name)."""
    from host.money import format_fen

    member = f"{row['member']} ({tiers.get(row['card'], '?')})" if row["member"] else "-"
    balance = format_fen(row["balance_fen"]) if row["member"] else "-"
    points = str(row["points"]) if row["member"] else "-"
    reader = row["led"] or "-"
    if row["relay"]:
        reader += f", relay {row['relay_ms']}"
    ms = "" if row["card_to_led_ms"] is None else str(row["card_to_led_ms"])
    line = _fmt_row([str(n), row["scene"], row["device"], member, row["verdict"],
                     row["reason"], balance, points, reader, ms])
    line += f"\n{'':4}screen: {row['text']}"
    if not row["ok"]:
        line += f"   << expected {row['expected'][0]} {row['expected'][1]}"
    return line


def run_cli(db: Path, *args: str) -> tuple[int, str]:
    """``tapkiosk --db DB ARGS`` in-process; returns (exit code, stdout)."""
    from host.cli import app as cli

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(["--db", str(db), *args])
    return rc, buf.getvalue()


def _next_steps(site: Path | None, metrics: str, stay: bool, mqtt: str | None) -> str:
    db = f"{site}/site.db" if site else "SITE/site.db"
    lines = ["", "Try next:"]
    if stay:
        lines += [f"  tapkiosk sim tap gate-1 {ANN} --db {db}      (in another terminal)",
                  f"  tapkiosk --db {db} member show --card {DEE}",
                  f"  curl -s {metrics} | grep tapkiosk_taps_total" if metrics else None,
                  "  Ctrl-C here stops the daemon and the readers."]
    else:
        lines += ["  tapkiosk demo --stay      keep the site running, then tap cards yourself:",
                  f"                            tapkiosk sim tap gate-1 {ANN} --db SITE/site.db",
                  "                            and read the metrics URL it prints",
                  "  tapkiosk demo --keep      keep the site directory to look at it "
                  "(tapkiosk --db SITE/site.db report daily)"]
    if not mqtt:
        lines.append("  tapkiosk demo --mqtt 127.0.0.1:1883   the same over MQTT, with mosquitto "
                     "running")
    lines.append("  docs: README.md, docs/operators.md, docs/technicians.md, docs/integrators.md,"
                 " docs/deploy.md")
    return "\n".join(x for x in lines if x is not None)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tapkiosk demo", description=__doc__.splitlines()[0])
    p.add_argument("--keep", action="store_true", help="keep the site directory and print its path")
    p.add_argument("--stay", action="store_true",
                   help="keep the daemon and readers running until Ctrl-C (tap with tapkiosk sim)")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="link the readers through this broker")
    p.add_argument("--json", action="store_true", help="one JSON object per tap, then a summary")
    return p


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the demo: 0 all decisions as expected and verify passed, 1 otherwise, 130 Ctrl-C."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        a = _parser().parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    if a.mqtt and not re.fullmatch(r"[^:\s]+:\d{1,5}", a.mqtt):
        print(f"tapkiosk demo: error: --mqtt {a.mqtt!r}: expected HOST:PORT", file=sys.stderr)
        return 2
    old: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.signal(sig, _raise_interrupt)
        # Also when started in the background by a shell, which ignores SIGINT there.
        old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    site = Path(tempfile.mkdtemp(prefix="tapkiosk-demo-"))
    out = sys.stdout
    say = sys.stderr if a.json else sys.stdout
    demo = Demo(site, a.mqtt, say)
    try:
        return _play(a, demo, out, say)
    except KeyboardInterrupt:
        if demo.staying:  # the normal end of --stay
            print("\ntapkiosk demo: stopping the readers and the daemon", file=say)
            return 0
        print("\ntapkiosk demo: interrupted; stopping the readers and the daemon", file=sys.stderr)
        return 130
    except DemoError as e:
        print(f"tapkiosk demo: error: {e}", file=sys.stderr)
        return 1
    finally:
        try:
            demo.close()
        finally:
            if a.keep:
                print(f"site kept: {site}", file=say)
            else:
                shutil.rmtree(site, ignore_errors=True)
            for sig, h in old.items():
                signal.signal(sig, h)


def _play(a: argparse.Namespace, demo: Demo, out: TextIO, say: TextIO) -> int:
    link = f"MQTT broker {a.mqtt}" if a.mqtt else "simulated serial cables"
    print("tapkiosk demo: the real daemon and three readers running the real firmware under "
          f"MicroPython\non emulated PN532 chips, linked by {link}. No hardware needed.", file=say)
    print(f"site: {demo.site}" + ("" if a.keep or a.stay else " (removed at the end)"), file=say)
    keys = seed(demo.db)
    print("members:", file=say)
    for uid, name, tier, what in MEMBERS:
        print(f"  {name:4} {tier:8} card {uid:15} {what}", file=say)
    demo.start(keys)
    tiers = {uid: tier for uid, _n, tier, _w in MEMBERS}
    print("", file=say)
    if not a.json:
        print(table_header(), file=say)
    rows = []
    t_first = None
    for n, step in enumerate(SCRIPT, 1):
        row = demo.play(step, t_first)
        if t_first is None:
            t_first = time.monotonic()
        rows.append(row)
        if a.json:
            out.write(json.dumps({"tap": n, **row}, sort_keys=True) + "\n")
            out.flush()
        else:
            print(table_row(n, row, tiers), file=say, flush=True)
    if a.stay:
        from sim.cli import ControlServer
        demo.control = ControlServer(demo.readers, demo.site)
    else:
        demo.stop_readers()
        rc = demo.stop_daemon()
        if rc != 0:
            print(f"tapkiosk demo: the daemon exited with {rc}", file=sys.stderr)
    rc_rep, report = run_cli(demo.db, *(["--json"] if a.json else []), "report", "daily",
                             "--days", "1")
    rc_ver, verify = run_cli(demo.db, "--json", "verify")
    ver = json.loads(verify) if verify.strip() else {"ok": False}
    all_ok = all(r["ok"] for r in rows) and rc_ver == 0 and ver.get("ok") is True and rc_rep == 0
    if a.json:
        out.write(json.dumps({"summary": True, "ok": all_ok, "taps": len(rows),
                              "verify": ver, "report": json.loads(report) if rc_rep == 0 else None,
                              "metrics_url": demo.metrics_url,
                              "site": str(demo.site) if a.keep or a.stay else None},
                             sort_keys=True) + "\n")
        out.flush()
    else:
        print("reader: the reader's LEDs and relay (its pins log); ms: card placed -> LED on",
              file=say)
        print(f"\nThe day so far (tapkiosk report daily --days 1):\n{report.rstrip()}", file=say)
        print(f"\ntapkiosk verify: {'ok' if ver.get('ok') else 'FAILED'}, every balance, lot and "
              f"punch card recomputed from {ver.get('ledger_rows', '?')} ledger rows"
              + ("" if ver.get("ok") else f": {ver.get('problems')}"), file=say)
        bad = [r for r in rows if not r["ok"]]
        print(f"{len(rows) - len(bad)} of {len(rows)} taps decided as expected.", file=say)
    print(_next_steps(demo.site if (a.keep or a.stay) else None, demo.metrics_url, a.stay,
                      a.mqtt), file=say)
    if a.stay:
        print(f"\nrunning; control file {demo.site}/sim-control.json. Ctrl-C to stop.", file=say,
              flush=True)
        demo.staying = True
        while all(r.alive() for r in demo.readers.values()) and demo.daemon is not None \
                and demo.daemon.poll() is None:
            time.sleep(0.5)
        print("tapkiosk demo: a reader or the daemon stopped", file=sys.stderr)
        return 1
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
