# Runs on CPython (sim, demo): `tapkiosk sim` — simulated readers (real firmware, emulated PN532) against a running daemon.
"""``tapkiosk sim`` — simulated readers for a running daemon, and virtual cards to tap on them.

A simulated reader is the real ``firmware/`` running under the MicroPython unix port
(``sim/run_device.py``), reading an emulated PN532 (``sim/pn532.py``), linked to the daemon
by a simulated serial cable (``sim/cable.py``; the daemon opens ``--serial socket://HOST:PORT``)
or by an MQTT broker. Cards are placed on and removed from the emulator.

Commands::

    tapkiosk sim run --db SITE.db --device gate-1 --serial socket://127.0.0.1:7101
    tapkiosk sim run --db SITE.db --device wash-1 --device kiosk-1 --mqtt 127.0.0.1:1883
    tapkiosk sim tap gate-1 04A1B2C3D4E5F6 --db SITE.db
    tapkiosk sim place gate-1 04A1B2C3D4E5F6 --db SITE.db
    tapkiosk sim remove gate-1 --db SITE.db

``run`` reads each device's kind and key from the site database, starts the readers and
reads commands on stdin (``place [DEVICE] UID``, ``remove [DEVICE]``, ``tap [DEVICE] UID``,
``devices``, ``quit``). With ``--serial`` it listens on the given address and the daemon
connects there (start the daemon with the same ``--serial socket://...``). The kiosk sends a
fixed amount (``--amount``, the reader's ``amount`` setting in ``config.json``), the wash bay
a fixed program (``--service``).

``tap``/``place``/``remove`` reach a running ``sim run`` (or ``tapkiosk demo --stay``)
through its control port, written to ``sim-control.json`` next to the site database; ``tap``
then waits for the tap's row in the database and prints the decision.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from protocol.compat import ticks_diff
from sim.cable import Cable
from sim.cards import UidCard
from sim.pinlog import read_events
from sim.pn532 import PN532Emulator
from sim.run_device import EXIT_RESET, FEEDBACK, SimBoard, make_config

CONTROL_FILE = "sim-control.json"
BOARDS_DIR = "sim-boards"        # default --board-dir, next to the site database
#: Global ``tapkiosk`` options forwarded to each subcommand (``tapkiosk --db X sim tap ...``).
GLOBAL_OPTIONS = {"run": ("--db",), "tap": ("--db", "--json"), "place": ("--db",),
                  "remove": ("--db",)}
KINDS = ("gate", "wash", "kiosk")


class SimError(Exception):
    """Bad input or nothing to talk to: one line on stderr, exit 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


# ---------------------------------------------------------------------- child processes
_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:
    # In the child between fork and exec: SIGKILL it when the process that started it dies,
    # so even a SIGKILLed demo leaves no firmware or daemon behind (Linux only).
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def child_popen_kw() -> dict[str, Any]:
    """Popen arguments for a child we own: its own process group (a terminal's Ctrl-C reaches
    only us, and we stop it in order) and, on Linux, killed if we die."""
    kw: dict[str, Any] = {"start_new_session": True}
    if _prctl is not None:
        kw["preexec_fn"] = _die_with_parent
    return kw


def stop_process(proc: Any, term_timeout: float = 10.0) -> None:
    """SIGTERM the child's process group, wait, then SIGKILL it; reap it."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, term_timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(wait)
            return
        except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: escalate
            continue


# ---------------------------------------------------------------------- one reader
class _Lines(list):
    """Console lines of a board with the local monotonic time they arrived; optional echo."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.echo = echo
        self.times: list[float] = []

    def append(self, line: str) -> None:  # type: ignore[override]
        self.times.append(time.monotonic())
        super().append(line)
        if self.echo is not None:
            self.echo(line)


class VirtualReader:
    """One simulated reader: PN532 emulator, the real firmware under MicroPython, and either a
    simulated serial cable (the daemon connects to ``serial_url``) or an MQTT broker."""

    def __init__(self, board_dir: str | os.PathLike, device_id: str, kind: str, key: bytes, *,
                 mqtt: str | None = None, listen: tuple[str, int] | None = None,
                 service: int = 0, amount_fen: int = 0, mqtt_password: str | None = None,
                 echo: Callable[[str], None] | None = None) -> None:
        if kind not in KINDS:
            raise SimError(f"device {device_id} has kind {kind!r}: expected one of {KINDS}")
        self.device_id = device_id
        self.kind = kind
        self.emu = PN532Emulator()
        self.cable: Cable | None = None
        self._closing = False
        try:
            hsu, bus = self.emu.serve_tcp(), self.emu.serve_bus()
            extra = {"service": service, "amount": amount_fen}
            if mqtt:
                cfg = make_config(device_id, kind, key, link="mqtt", broker=mqtt, **extra)
                if mqtt_password:  # a broker with logins: each reader is its device id, as provisioned
                    cfg["mqtt"].update(user=device_id, password=mqtt_password)
                link_tcp = None
            else:
                host, port = listen or ("127.0.0.1", 0)
                try:
                    self.cable = Cable(host, 0, port).start()
                except OSError as e:
                    raise SimError(f"cannot listen on {host}:{port} for {device_id}: "
                                   f"{e.strerror}") from None
                cfg = make_config(device_id, kind, key, **extra)
                link_tcp = self.cable.port_a
            self.board = SimBoard(board_dir, cfg, pn532_tcp=hsu, pn532_bus=bus, link_tcp=link_tcp)
        except BaseException:
            self.close()
            raise
        # The firmware ignores the same card until it was away this long: its config's
        # debounce, or the daemon's (pushed with the device config, 1.5 s by default).
        self.debounce_s = max(cfg.get("debounce_ms", 0), 1500) / 1000 + 0.2
        self._last_uid, self._removed_at = b"", 0.0
        self.board.popen_kw = child_popen_kw()
        self.lines = _Lines(echo)
        self.board.lines = self.lines
        self._super: threading.Thread | None = None

    @property
    def serial_url(self) -> str | None:
        """pyserial URL the daemon opens (``--serial``), or None on MQTT."""
        return self.cable.url_b if self.cable else None

    def start(self) -> "VirtualReader":
        """Power the board on; a ``machine.reset()`` restarts the firmware, as on a board."""
        self.board.start()
        self._super = threading.Thread(target=self._supervise, daemon=True,
                                       name=f"sim {self.device_id}")
        self._super.start()
        return self

    def _supervise(self) -> None:
        while not self._closing:
            proc = self.board.proc
            if proc is None:
                return
            rc = proc.wait()
            if self._closing or rc != EXIT_RESET:
                return
            self.board.start()

    def wait_online(self, timeout: float = 30.0) -> bool:
        """True once the firmware said it is online (WELCOME from the daemon)."""
        return self.board.wait_for("online", timeout) is not None

    def alive(self) -> bool:
        return self.board.alive()

    def place(self, uid: str) -> None:
        """Put a virtual card with this UID (4, 7 or 10 bytes of hex) on the reader."""
        self.emu.place(UidCard(parse_uid(uid)))

    def remove(self) -> None:
        self.emu.remove()

    def tap(self, uid: str, hold_s: float = 0.4) -> None:
        """Place, hold, remove. The same card again within the reader's debounce would be
        ignored by the firmware (one presentation): wait the debounce out first."""
        key = parse_uid(uid)
        if key == self._last_uid:
            time.sleep(max(0.0, self._removed_at + self.debounce_s - time.monotonic()))
        self.place(uid)
        time.sleep(hold_s)
        self.remove()
        self._last_uid, self._removed_at = key, time.monotonic()

    def tap_and_watch(self, uid: str, hold_s: float = 0.4, wait_s: float = 3.0) -> None:
        """``tap``, then watch the reader for ``wait_s`` s: raises SimError when the daemon
        refused the frame (the firmware prints ``host error``) instead of claiming success."""
        mark = len(self.board.output())
        self.tap(uid, hold_s)
        deadline = time.monotonic() + wait_s
        while True:
            for line in self.board.output()[mark:]:
                if "host error" in line or "host refused" in line:
                    raise SimError(f"the daemon refused the tap on {self.device_id}: "
                                   f"{line.strip()}")
                if "DISPLAY:" in line:
                    return
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)

    def feedback_since(self, since_ticks: int) -> dict[str, Any]:
        """What the board's outputs did since ``since_ticks`` (protocol.compat.ticks_ms, the
        clock the pins log uses): LED colour, relay, and ms from then to the first LED."""
        led_r, led_g, relay = str(FEEDBACK["led_r"]), str(FEEDBACK["led_g"]), str(FEEDBACK["relay"])
        first: int | None = None
        red = green = relay_on = False
        for e in read_events(self.board.pins):
            if ticks_diff(e.ticks_ms, since_ticks) < 0 or e.value != "1":
                continue
            if e.pin in (led_r, led_g) and first is None:
                first = ticks_diff(e.ticks_ms, since_ticks)
            red |= e.pin == led_r
            green |= e.pin == led_g
            relay_on |= e.pin == relay
        led = "amber" if red and green else "red" if red else "green" if green else ""
        return {"led": led, "relay": relay_on, "ms": first}

    def idle(self) -> bool:
        """True when the LEDs and the relay are off (the last tap's feedback is over)."""
        last: dict[str, str] = {}
        for e in read_events(self.board.pins):
            last[e.pin] = e.value
        return all(last.get(str(FEEDBACK[n]), "0") == "0" for n in ("led_r", "led_g", "relay"))

    def wait_idle(self, timeout: float = 3.0) -> bool:
        """Wait until ``idle()``: a new pattern on a lit LED would not show in the pins log."""
        deadline = time.monotonic() + timeout
        while not self.idle():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self) -> None:
        """Stop the firmware (power cut), the cable and the emulator."""
        self._closing = True
        board = getattr(self, "board", None)
        if board is not None and board.proc is not None and board.proc.poll() is None:
            stop_process(board.proc, term_timeout=0.0)
        if self.cable is not None:
            self.cable.stop()
        self.emu.close()


def parse_uid(text: str) -> bytes:
    """Card UID as hex (``04A1B2C3D4E5F6``, ``04:a1:...``); 4, 7 or 10 bytes."""
    clean = text.replace(":", "").replace("-", "").strip()
    try:
        uid = bytes.fromhex(clean)
    except ValueError:
        raise SimError(f"bad card UID {text!r}: expected hex such as 04A1B2C3D4E5F6") from None
    if len(uid) not in (4, 7, 10):
        raise SimError(f"bad card UID {text!r}: a UID has 4, 7 or 10 bytes, not {len(uid)}")
    return uid


# ---------------------------------------------------------------------- control port
class ControlServer:
    """Line commands on a loopback TCP port for ``tapkiosk sim tap|place|remove``:
    ``tap DEVICE UID [HOLD_MS]``, ``place DEVICE UID``, ``remove DEVICE`` -> ``ok`` or
    ``error: ...``. Its address goes to ``<site dir>/sim-control.json``."""

    def __init__(self, readers: dict[str, VirtualReader], site_dir: str | os.PathLike) -> None:
        self.readers = readers
        self.path = Path(site_dir) / CONTROL_FILE
        other = running_simulator(self.path)
        if other is not None:
            raise SimError(f"another simulator (pid {other.get('pid')}, devices "
                           f"{', '.join(other.get('devices', []))}) already runs for this site: "
                           "stop it first, or give all devices to one 'sim run' (repeat --device)")
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.port = self._srv.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True, name="sim control").start()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"host": "127.0.0.1", "port": self.port, "pid": os.getpid(),
                                   "devices": sorted(readers)}))
        tmp.replace(self.path)

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rw", encoding="ascii", newline="\n") as f:
            for line in f:
                try:
                    reply = self.command(line.split())
                except SimError as e:
                    reply = f"error: {e}"
                f.write(reply + "\n")
                f.flush()

    def command(self, words: list[str]) -> str:
        if not words or words[0] not in ("tap", "place", "remove"):
            raise SimError("commands: tap DEVICE UID [HOLD_MS] | place DEVICE UID | remove DEVICE")
        if len(words) < 2 or words[1] not in self.readers:
            raise SimError(f"unknown device {' '.join(words[1:2])!r} here: "
                           f"{', '.join(sorted(self.readers))}")
        r = self.readers[words[1]]
        if words[0] == "remove":
            r.remove()
        elif len(words) < 3:
            raise SimError(f"{words[0]} needs a card UID")
        elif words[0] == "place":
            r.place(words[2])
        else:
            hold = int(words[3]) if len(words) > 3 and words[3].isdigit() else 400
            r.tap_and_watch(words[2], min(hold, 10000) / 1000)
        return "ok"

    def close(self) -> None:
        self._stop = True
        self._srv.close()
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self.path.read_text()).get("port") == self.port:
                self.path.unlink()


def running_simulator(path: Path) -> dict | None:
    """The control info in ``path`` when the simulator that wrote it still answers (None: no
    file, or a stale one left by a simulator that died)."""
    try:
        info = json.loads(path.read_text())
        with socket.create_connection((info["host"], int(info["port"])), timeout=2):
            return info
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _send_control(db: str, words: list[str], timeout: float = 15.0) -> None:
    path = Path(db).resolve().parent / CONTROL_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        raise SimError(f"no simulator is running for {db} (no {CONTROL_FILE} next to it): start "
                       "'tapkiosk demo --stay' or 'tapkiosk sim run --db ...' first") from None
    try:
        with socket.create_connection((info["host"], int(info["port"])), timeout=timeout) as s:
            s.sendall((" ".join(words) + "\n").encode("ascii"))
            reply = s.makefile("r", encoding="ascii").readline().strip()
    except OSError as e:
        raise SimError(f"the simulator for {db} does not answer ({e}); is it still "
                       "running?") from None
    if reply != "ok":
        raise SimError(reply.removeprefix("error: ") or "no answer from the simulator")


# ---------------------------------------------------------------------- database reads
def _ro(db: str) -> sqlite3.Connection:
    """The site database opened read-only (the daemon is its writer)."""
    from host.errors import InputError
    from host.store.views import open_readonly
    try:
        return open_readonly(db)
    except InputError as e:
        raise SimError(str(e)) from None


def device_from_db(db: str, device_id: str) -> tuple[str, bytes]:
    """(kind, key) of a registered device."""
    from host.store.views import device_kind_key
    with contextlib.closing(_ro(db)) as conn:
        found = device_kind_key(conn, device_id)
    if found is None:
        raise SimError(f"device {device_id} is not registered in {db}: "
                       f"tapkiosk device add {device_id} gate|wash|kiosk")
    return found


def last_tap_id(db: str) -> int:
    """The id of the newest tap in ``db`` (0 when none)."""
    from host.store import views
    with contextlib.closing(_ro(db)) as conn:
        return views.last_tap_id(conn)


def wait_tap(db: str, device_id: str, after_id: int, timeout: float = 10.0) -> dict | None:
    """The first tap row of ``device_id`` with id > ``after_id``, waiting up to ``timeout`` s."""
    from host.store.views import tap_after
    deadline = time.monotonic() + timeout
    with contextlib.closing(_ro(db)) as conn:
        while True:
            row = tap_after(conn, device_id, after_id)
            if row is not None or time.monotonic() > deadline:
                return row
            time.sleep(0.05)


def _yuan(fen: int) -> str:
    from host.money import format_fen
    return format_fen(fen)


def describe_tap(row: dict) -> str:
    """One line for a decided tap."""
    who = row.get("member") or (f"member {row['member_id']}" if row.get("member_id") else "-")
    return (f"{row['device_id']}  {row['uid']}  {who}  {row['verdict']} {row['reason']}  "
            f"\"{row['text']}\"  charged {_yuan(row['charged_fen'])}  balance "
            f"{_yuan(row['balance_fen'])}  points {row['points']}")


# ---------------------------------------------------------------------- commands
def _default_db() -> str:
    from host.store.db import default_db_path
    return default_db_path()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tapkiosk sim", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    r = sub.add_parser("run", help="run simulated readers; commands on stdin")
    r.add_argument("--db", help="site database (device kinds and keys); default as tapkiosk")
    r.add_argument("--device", action="append", required=True, metavar="ID",
                   help="a registered device id (repeat for more readers)")
    g = r.add_mutually_exclusive_group(required=True)
    g.add_argument("--serial", action="append", metavar="socket://HOST:PORT",
                   help="where the daemon's --serial connects, one per --device, in order")
    g.add_argument("--mqtt", metavar="HOST:PORT", help="MQTT broker the readers use")
    r.add_argument("--mqtt-password", help="broker password of every simulated reader (each logs in "
                                           "as its device id); or set TAPKIOSK_MQTT_PASSWORD")
    r.add_argument("--service", type=int, default=1, help="wash program sent by wash bays")
    r.add_argument("--amount", default="10.00", help="yuan sent by kiosks with every tap")
    r.add_argument("--board-dir", help="where the boards' flash lives, kept between runs so "
                   "the boot counters go on (default: sim-boards/ next to the database)")
    r.add_argument("--no-input", action="store_true",
                   help="ignore stdin; run until Ctrl-C (taps through 'tapkiosk sim tap')")
    for name, helptext in (("tap", "place a card, hold it, remove it; print the decision"),
                           ("place", "put a card on the reader and leave it there"),
                           ("remove", "take the card off the reader")):
        t = sub.add_parser(name, help=helptext)
        t.add_argument("device")
        if name != "remove":
            t.add_argument("uid")
        t.add_argument("--db", help="site database (default as tapkiosk)")
        if name == "tap":
            t.add_argument("--hold-ms", type=int, default=400)
            t.add_argument("--timeout", type=float, default=10.0,
                           help="seconds to wait for the decision")
            t.add_argument("--json", action="store_true")
    return p


def _listen_addr(url: str) -> tuple[str, int]:
    if not url.startswith("socket://"):
        raise SimError(f"--serial {url!r}: give socket://HOST:PORT (the daemon's --serial)")
    host, _, port = url[len("socket://"):].rpartition(":")
    if not host or not port.isdigit():
        raise SimError(f"--serial {url!r}: give socket://HOST:PORT")
    return host, int(port)


def _run(a: argparse.Namespace, out: Any) -> int:
    from host.money import parse_yuan
    db = a.db or _default_db()
    if a.serial and len(a.serial) != len(a.device):
        raise SimError("give one --serial per --device (in the same order)")
    if len(set(a.device)) != len(a.device):
        raise SimError("a device is given twice")
    try:
        amount = parse_yuan(a.amount)
    except Exception as e:  # noqa: BLE001 - host.errors.InputError: same message
        raise SimError(str(e)) from None
    devs = [(d, *device_from_db(db, d)) for d in a.device]
    lock = threading.Lock()

    def echo_for(device_id: str) -> Callable[[str], None]:
        def echo(line: str) -> None:
            with lock:
                out.write(f"[{device_id}] {line}\n")
                out.flush()
        return echo

    # The boards' flash (boot counter, outbox) outlives the run: a board wiped at every start
    # would count from boot 1 again under the same key, and the daemon refuses that as replays.
    boards = Path(a.board_dir) if a.board_dir else Path(db).resolve().parent / BOARDS_DIR
    readers: dict[str, VirtualReader] = {}
    control: ControlServer | None = None
    try:
        for i, (dev, kind, key) in enumerate(devs):
            readers[dev] = VirtualReader(
                boards / dev, dev, kind, key, mqtt=a.mqtt,
                listen=_listen_addr(a.serial[i]) if a.serial else None,
                service=a.service if kind == "wash" else 0,
                amount_fen=amount if kind == "kiosk" else 0, echo=echo_for(dev),
                mqtt_password=a.mqtt_password or os.environ.get("TAPKIOSK_MQTT_PASSWORD"))
        for r in readers.values():
            r.start()
        control = ControlServer(readers, Path(db).resolve().parent)
        with lock:
            for r in readers.values():
                where = f"daemon connects to {r.serial_url}" if r.serial_url else f"MQTT {a.mqtt}"
                out.write(f"sim: {r.device_id} ({r.kind}) started; {where}\n")
            out.write("sim: commands: tap [DEVICE] UID | place [DEVICE] UID | remove [DEVICE] | "
                      "devices | quit\n")
            out.flush()
        if a.no_input:
            while all(r.alive() for r in readers.values()):
                time.sleep(0.5)
            return 1
        _prompt(readers, out, lock)
        return 0
    finally:
        if control is not None:
            control.close()
        for r in readers.values():
            r.close()


def _prompt(readers: dict[str, VirtualReader], out: Any, lock: threading.Lock) -> None:
    only = next(iter(readers)) if len(readers) == 1 else None
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        cmd, rest = words[0], words[1:]
        if cmd in ("quit", "exit"):
            return
        try:
            if cmd == "devices":
                msg = ", ".join(f"{d} ({r.kind}, {'running' if r.alive() else 'stopped'})"
                                for d, r in readers.items())
            elif cmd in ("tap", "place", "remove"):
                if rest and rest[0] in readers:
                    dev, rest = rest[0], rest[1:]
                elif only is not None:
                    dev = only
                else:
                    raise SimError(f"which device? {', '.join(readers)}")
                if cmd == "remove":
                    readers[dev].remove()
                elif len(rest) != 1:
                    raise SimError(f"{cmd} needs one card UID")
                elif cmd == "place":
                    readers[dev].place(rest[0])
                else:
                    readers[dev].tap_and_watch(rest[0])
                msg = f"{cmd} {dev} ok"
            else:
                raise SimError("commands: tap [DEVICE] UID | place [DEVICE] UID | "
                               "remove [DEVICE] | devices | quit")
        except SimError as e:
            msg = f"error: {e}"
        with lock:
            out.write(f"sim: {msg}\n")
            out.flush()


def _tap(a: argparse.Namespace, out: Any) -> int:
    db = a.db or _default_db()
    parse_uid(a.uid)
    before = last_tap_id(db)
    _send_control(db, ["tap", a.device, a.uid, str(max(0, a.hold_ms))])
    row = wait_tap(db, a.device, before, a.timeout)
    if row is None:
        print(f"tapkiosk sim: error: no decision for {a.device} within {a.timeout:g} s: the "
              "reader sent the tap but no decision was stored (is the daemon running and the "
              "reader online? see the sim run console)", file=sys.stderr)
        return 1
    if a.json:
        out.write(json.dumps(row, sort_keys=True) + "\n")
    else:
        out.write(describe_tap(row) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tapkiosk sim``: 0 ok, 1 no decision / a reader stopped, 2 bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        a = _parser().parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    old = None
    if a.cmd == "run" and threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, _raise_interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if a.cmd == "run":
            return _run(a, sys.stdout)
        if a.cmd == "tap":
            return _tap(a, sys.stdout)
        db = a.db or _default_db()
        if a.cmd == "place":
            parse_uid(a.uid)
            _send_control(db, ["place", a.device, a.uid])
        else:
            _send_control(db, ["remove", a.device])
        print(f"{a.cmd} {a.device} ok")
        return 0
    except SimError as e:
        print(f"tapkiosk sim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
