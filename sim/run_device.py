# Runs on CPython (tests, demo): prepares a simulated board directory and runs the real firmware in it under the MicroPython unix port.
"""Run ``firmware/main.py`` unchanged under ``micropython``, as one simulated board.

The board directory is the board's filesystem: ``config.json`` (as tools/flash.py writes it),
and what the firmware keeps on flash (``boot.dat``, ``outbox.bin``, ``params.json``,
``allow.bin``). The process runs with the board directory as its cwd and with the
``sim/mpy`` stand-ins for ``machine``/``network`` first on ``MICROPYPATH``; the wiring goes
through environment variables (see sim/mpy/machine.py):

- the PN532 emulator: ``TAPKIOSK_SIM_UART<reader uart>`` (HSU byte stream) and
  ``TAPKIOSK_SIM_PIN<reset pin>=rstpdn@...`` (its RSTPDN pin, so the driver can reset it);
- the serial link: ``TAPKIOSK_SIM_UART<link uart>=tcp:127.0.0.1:PORT`` (end A of sim/cable.py);
- pin writes (relay, LEDs, buzzer, watchdog) go to ``<board>/pins.log``.

Command line (a simulated reader with an emulated PN532; type ``tap UID`` on stdin)::

    python -m sim.run_device --board /tmp/gate-01 --device-id gate-01 --kind gate \\
        --key <64 hex> --serial tcp:127.0.0.1:7001
    python -m sim.run_device --board /tmp/wash-1 --device-id wash-1 --kind wash \\
        --key <64 hex> --mqtt 127.0.0.1:1883

``machine.reset()`` (exit code 75) and a watchdog reset restart the firmware, as a board would.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXIT_RESET = 75

READER_UART = 1
LINK_UART = 2
RESET_PIN = 4
FEEDBACK = {"relay": 26, "relay_active": 1, "led_r": 25, "led_g": 27, "buzzer": 13}


def micropython_exe() -> str:
    """The unix-port binary to run: ``TAPKIOSK_MICROPYTHON`` if set (e.g. a 32-bit build), else
    the one next to this interpreter (the venv's), else ``micropython`` on PATH."""
    chosen = os.environ.get("TAPKIOSK_MICROPYTHON")
    if chosen:
        return str(Path(chosen).resolve())
    cand = Path(sys.executable).parent / "micropython"
    return str(cand) if cand.exists() else "micropython"


def make_config(device_id: str, kind: str, key: bytes | str, *, link: str = "serial",
                broker: str | None = None, debounce_ms: int = 800, **extra: Any) -> dict[str, Any]:
    """A config.json dict shaped like tools/flash.py's, wired for the simulator."""
    key_hex = key.hex() if isinstance(key, (bytes, bytearray)) else str(key)
    mqtt: dict[str, Any] = {"broker": None, "port": 1883, "user": None, "password": None}
    if link == "mqtt":
        host, _, port = (broker or "127.0.0.1:1883").rpartition(":")
        mqtt = {"broker": host, "port": int(port), "user": None, "password": None}
    cfg = {
        "device_id": device_id,
        "kind": kind,
        "key": key_hex,
        "link": link,
        "serial": {"uart": LINK_UART, "baud": 115200, "tx": 17, "rx": 16},
        "mqtt": mqtt,
        "wifi": {"ssid": "sim" if link == "mqtt" else "", "password": "simsimsim" if link == "mqtt" else ""},
        "reader": {"bus": "hsu", "uart": READER_UART, "tx": 32, "rx": 33, "reset": RESET_PIN, "irq": None},
        "feedback": dict(FEEDBACK),
        "debounce_ms": debounce_ms,
        "config_version": 1,
    }
    cfg.update(extra)
    return cfg


class SimBoard:
    """One board directory plus its micropython process (start, kill, restart)."""

    def __init__(self, board: str | os.PathLike, config: dict[str, Any], *, pn532_tcp: int | None = None,
                 pn532_bus: int | None = None, link_tcp: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.dir = Path(board)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        (self.dir / "config.json").write_text(json.dumps(config, sort_keys=True))
        self.pins = self.dir / "pins.log"
        self.log = self.dir / "console.log"
        self.env = self._env(pn532_tcp, pn532_bus, link_tcp, env or {})
        self.proc: subprocess.Popen | None = None
        self.popen_kw: dict[str, Any] = {}  # extra Popen arguments (the demo: start_new_session)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.restarts = 0           # machine.reset()s followed by start() (supervise=True)
        self._supervise = False

    def _env(self, pn532_tcp, pn532_bus, link_tcp, extra) -> dict[str, str]:
        env = dict(os.environ)
        env["MICROPYPATH"] = ":".join([str(ROOT / "sim" / "mpy"), str(ROOT / "firmware"), str(ROOT), ".frozen"])
        env["TAPKIOSK_SIM_PINS"] = str(self.pins)
        reader = self.config.get("reader") or {}
        if pn532_tcp:
            env[f"TAPKIOSK_SIM_UART{reader.get('uart', READER_UART)}"] = f"tcp:127.0.0.1:{pn532_tcp}"
        if pn532_bus and reader.get("reset") is not None:
            env[f"TAPKIOSK_SIM_PIN{reader['reset']}"] = f"rstpdn@tcp:127.0.0.1:{pn532_bus}"
        if link_tcp:
            env[f"TAPKIOSK_SIM_UART{self.config['serial']['uart']}"] = f"tcp:127.0.0.1:{link_tcp}"
        env.update(extra)
        return env

    def start(self, supervise: bool = False) -> "SimBoard":
        """Start the firmware (a power-on); console lines are collected in ``lines``.
        ``supervise``: a ``machine.reset()`` (exit code 75) starts it again, as a board reboots."""
        self._supervise = supervise
        self.proc = subprocess.Popen([micropython_exe(), str(ROOT / "firmware" / "main.py")], cwd=self.dir,
                                     env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, **self.popen_kw)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        with open(self.log, "a") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                with self._lock:
                    self.lines.append(line.rstrip("\n"))
        if proc.wait() == EXIT_RESET and self._supervise and proc is self.proc:
            self.restarts += 1
            self.start(supervise=True)

    def output(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def wait_for(self, text: str, timeout: float = 10.0, start: int = 0) -> str | None:
        """First console line (from index ``start``) containing ``text``, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.output()[start:]:
                if text in line:
                    return line
            if time.monotonic() >= deadline or (self.proc is not None and self.proc.poll() is not None):
                for line in self.output()[start:]:
                    if text in line:
                        return line
                return None
            time.sleep(0.02)

    def kill(self) -> None:
        """Power cut: SIGKILL, nothing flushed that was not flushed already."""
        self._supervise = False
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def main(argv: list[str] | None = None) -> int:
    """Run one simulated board with an emulated PN532; `tap UID` on stdin presents a card."""
    ap = argparse.ArgumentParser(prog="python -m sim.run_device", description=main.__doc__)
    ap.add_argument("--board", required=True, help="board directory (its flash filesystem)")
    ap.add_argument("--device-id", required=True)
    ap.add_argument("--kind", choices=("gate", "wash", "kiosk"), required=True)
    ap.add_argument("--key", required=True, help="device key, 64 hex digits")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--serial", help="serial link: tcp:HOST:PORT of end A of python -m sim.cable")
    g.add_argument("--mqtt", help="MQTT broker HOST:PORT")
    ap.add_argument("--service", type=int, default=0)
    ap.add_argument("--amount", type=int, default=0, help="kiosk amount in fen")
    ap.add_argument("--hold-ms", type=int, default=300, help="how long `tap` leaves the card on the reader")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from sim.cards import UidCard
    from sim.pn532 import PN532Emulator

    emu = PN532Emulator()
    tcp = emu.serve_tcp()
    bus = emu.serve_bus()
    extra: dict[str, Any] = {"service": args.service, "amount": args.amount}
    if args.mqtt:
        cfg = make_config(args.device_id, args.kind, args.key, link="mqtt", broker=args.mqtt, **extra)
        link_tcp = None
    else:
        cfg = make_config(args.device_id, args.kind, args.key, **extra)
        link_tcp = int(args.serial.rsplit(":", 1)[1])
    board = SimBoard(args.board, cfg, pn532_tcp=tcp, pn532_bus=bus, link_tcp=link_tcp)
    board.lines = _Echo()

    def supervise() -> None:
        while True:
            board.start()
            rc = board.proc.wait()
            if rc not in (EXIT_RESET, -9):
                print(f"firmware exited with {rc}", file=sys.stderr)
                os._exit(1)
            print("-- board reset, restarting firmware", file=sys.stderr)

    threading.Thread(target=supervise, daemon=True).start()
    print("type: tap UID_HEX | place UID_HEX | remove | quit", file=sys.stderr)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] in ("tap", "place") and len(words) == 2:
                emu.place(UidCard(bytes.fromhex(words[1])))
                if words[0] == "tap":
                    time.sleep(args.hold_ms / 1000)
                    emu.remove()
            elif words[0] == "remove":
                emu.remove()
            elif words[0] == "quit":
                break
    except KeyboardInterrupt:
        pass
    board.kill()
    emu.close()
    return 0


class _Echo(list):
    """Console lines, echoed to stdout as they arrive (command-line use)."""

    def append(self, line: str) -> None:  # type: ignore[override]
        print(line, flush=True)
        super().append(line)


if __name__ == "__main__":
    sys.exit(main())
