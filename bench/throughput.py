# Runs on CPython: benchmark of sustained taps/s through the daemon from 100 simulated MQTT readers.
"""Sustained throughput of the daemon over MQTT, with a loss check.

Starts a mosquitto on loopback (``set_tcp_nodelay true``) and the daemon as a subprocess
(``python -m host.daemon``) on a fresh site database with one member and card per device.
A load generator (a few raw-socket MQTT clients, ``bench/rawmqtt.py``, each speaking for many
devices on their own topics, every TAP built before the measured window)
runs ``--devices`` readers closed-loop: each device sends its next TAP as soon as the
previous DECISION came back (authenticated with the device key). After ``--seconds`` the
generator stops, waits for the last decisions, and checks that every tap sent got exactly one
decision and that the store holds exactly that many taps.

The daemon, the broker and the load generator are three processes; the CPU each used over
the measured window is printed (in cores), so a saturated load generator shows instead of
passing for a slow daemon.

Usage: ``python bench/throughput.py [--devices 100] [--seconds 10] [--clients 4]``
Last line JSON: ``{"bench": "throughput", "taps_per_s": .., "taps": .., "lost": 0, ...}``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rawmqtt import RawMqtt, publish_packet  # noqa: E402
from support import Args, Broker, cpu_seconds, finish, scrape, start_daemon, stop, work_dir  # noqa: E402

from host.admin import Admin  # noqa: E402
from host.store.db import open_db  # noqa: E402
from host.store.devices import register_device  # noqa: E402
from protocol import packet as pk  # noqa: E402
from protocol.mac import Mac  # noqa: E402


def make_site(path: Path, n: int) -> list[tuple[str, bytes, str]]:
    """n kiosks, each with a member holding one card and a balance."""
    db = open_db(path)
    admin = Admin(db)
    out = []
    for i in range(n):
        dev, key, uid = f"k{i:03d}", os.urandom(32), f"04{i:012X}"
        register_device(db, dev, "kiosk", key=key)
        m = admin.add_member()["member_id"]   # no personal data: no site data key needed
        admin.enroll_card(m, uid)
        admin.topup(m, 4_000_000)
        out.append((dev, key, uid))
    db.conn.close()
    return out


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (the daemon's MQTT link process)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():   # each thread lists what it started
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


class Loader:
    """One raw MQTT client (``bench/rawmqtt.py``) speaking for several devices, closed loop
    (one tap in flight each). Every TAP is encoded and wrapped in its PUBLISH before the
    measured window; a DECISION is checked (MAC, tap_seq, verdict) and answered with the
    device's next TAP in the same write as its PUBACK."""

    def __init__(self, broker: Broker, devices: list[tuple[str, bytes, str]], idx: int) -> None:
        self.devs = {d: (Mac(k), bytes.fromhex(u)) for d, k, u in devices}
        self.index = {d: i for i, d in enumerate(self.devs)}
        self.seq = {d: 1 << 16 for d in self.devs}
        self.pending: dict[str, int] = {}
        self.frames: dict[str, dict[int, bytes]] = {d: {} for d in self.devs}
        self.sent = 0
        self.decided = 0
        self.dupes = 0
        self.bad = 0
        self.running = False
        self.idle = threading.Event()
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.c = RawMqtt(broker.host, broker.port, f"bench-load-{idx}", self._on_message)
        self.c.subscribe([f"tapkiosk/v1/{d}/down" for d in self.devs])
        self.ready.set()

    def packet(self, dev: str, seq: int) -> bytes:
        """The PUBLISH of the device's TAP ``seq`` (packet ids: a range per device)."""
        mac, uid = self.devs[dev]
        raw = pk.encode(pk.TAP, seq, dev, {"uid": uid, "sak": 8, "flags": 0, "direction": 0,
                                           "service": 0, "amount": 100, "device_time": 0,
                                           "secure": b""}, mac, pk.UP)
        return publish_packet(f"tapkiosk/v1/{dev}/up", raw,
                              1 + self.index[dev] * 600 + seq % 600)

    def pre_encode(self, per_device: int) -> None:
        """Build each device's next ``per_device`` TAP PUBLISHes now, before the measured
        window (the generator shares the cores with the daemon); past them, taps are built
        as they go."""
        self.frames = {d: {s: self.packet(d, s) for s in range(self.seq[d] + 1,
                                                                self.seq[d] + 1 + per_device)}
                       for d in self.devs}

    def send_tap(self, dev: str) -> None:
        self.seq[dev] += 1
        seq = self.seq[dev]
        data = self.frames[dev].pop(seq, None) or self.packet(dev, seq)
        self.pending[dev] = seq
        self.sent += 1
        self.c.send(data)

    def start(self) -> None:
        with self.lock:
            self.running = True
            for d in self.devs:
                self.send_tap(d)

    def stop(self) -> None:
        with self.lock:
            self.running = False
            if not self.pending:
                self.idle.set()

    def _on_message(self, topic: str, payload: bytes) -> None:
        dev = topic.split("/")[2]
        try:
            p = pk.decode(payload, self.devs[dev][0], pk.DOWN)
        except Exception:  # noqa: BLE001 - counted as a bad frame
            self.bad += 1
            return
        if p.type != pk.DECISION:
            return
        with self.lock:
            if self.pending.get(dev) != p.fields["tap_seq"]:
                self.dupes += 1
                return
            del self.pending[dev]
            self.decided += 1
            if p.fields["verdict"] != 1:
                self.bad += 1
            if self.running:
                self.send_tap(dev)
            elif not self.pending:
                self.idle.set()

    def close(self) -> None:
        self.c.close()


def main(argv: list[str] | None = None) -> int:
    ap = Args(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--mqtt-process", choices=("on", "off"), default="on",
                    help="the daemon's MQTT link in a child process (on) or in-process (off)")
    a = ap.parse_args(argv)
    if a.devices < 1 or a.clients < 1 or a.seconds <= 0:
        ap.error("need --devices and --clients >= 1 and --seconds > 0")
    tmp = work_dir()
    db = tmp / "site.db"
    devices = make_site(db, a.devices)
    broker = Broker(tmp)
    try:
        proc, mport = start_daemon(db, tmp, "--mqtt", broker.address, "--mqtt-process", a.mqtt_process)
    except BaseException:
        broker.stop()
        raise
    loaders: list[Loader] = []
    try:
        per = (len(devices) + a.clients - 1) // a.clients
        loaders = [Loader(broker, devices[i:i + per], k)
                   for k, i in enumerate(range(0, len(devices), per))]
        ahead = int(a.seconds * 6000 / max(1, a.devices)) + 100   # > the taps a device makes
        for ld in loaders:
            ld.ready.wait(10)
            ld.pre_encode(ahead)
        # Warm-up: first contact loads each device on the daemon.
        for ld in loaders:
            ld.start()
        time.sleep(1.0)
        base = sum(ld.decided for ld in loaders)
        kids = children(proc.pid)
        pids = (proc.pid, broker.proc.pid, None, *kids)
        cpu0 = [cpu_seconds(p) for p in pids]
        m0 = scrape(mport)
        t0 = time.perf_counter()
        time.sleep(a.seconds)
        done = sum(ld.decided for ld in loaders) - base
        elapsed = time.perf_counter() - t0
        cores = [round((cpu_seconds(p) - c) / elapsed, 2) for p, c in zip(pids, cpu0)]
        link_cores = round(sum(cores[3:]), 2)
        m1 = scrape(mport)
        bs = "tapkiosk_writer_batch_size_"
        n_tx = m1[bs + "count"] - m0[bs + "count"]
        batch = round((m1[bs + "sum"] - m0[bs + "sum"]) / n_tx, 1) if n_tx else None
        tx = "tapkiosk_writer_transaction_seconds_sum"
        tx_s = m1.get(tx, 0.0) - m0.get(tx, 0.0)
        tx_ms = round(tx_s / n_tx * 1000.0, 2) if n_tx else None
        writer_busy = round(tx_s / elapsed, 2)
        led = "tapkiosk_writer_led_taps_total"
        led_share = round((m1.get(led, 0.0) - m0.get(led, 0.0)) / max(1, done), 3)
        wc = "tapkiosk_writer_cpu_seconds_total{phase=\"%s\"}"
        writer_us = {ph: round((m1.get(wc % ph, 0.0) - m0.get(wc % ph, 0.0)) / max(1, done)
                               * 1e6, 1) for ph in ("transaction", "answer")}
        gc_key = 'tapkiosk_gc_pause_seconds_sum{generation="%d"}'
        gc_us = [round((m1.get(gc_key % g, 0.0) - m0.get(gc_key % g, 0.0)) / max(1, done) * 1e6,
                       2) for g in range(3)]
        for ld in loaders:
            ld.stop()
        for ld in loaders:
            ld.idle.wait(15)
        sent = sum(ld.sent for ld in loaders)
        decided = sum(ld.decided for ld in loaders)
        dupes = sum(ld.dupes for ld in loaders)
        bad = sum(ld.bad for ld in loaders)
    finally:
        for ld in loaders:
            ld.close()
        stop(proc, 30)
        broker.stop()
    store = open_db(db)
    stored = store.execute("SELECT count(*) FROM taps").fetchone()[0]
    store.conn.close()
    rate = done / elapsed
    lost = sent - decided
    print(f"devices {a.devices}, {a.clients} load clients, {a.seconds:.0f} s measured")
    print(f"sustained {rate:.0f} taps/s; sent {sent}, decided {decided}, stored {stored}, "
          f"lost {lost}, duplicate decisions {dupes}, denied/bad {bad}")
    print(f"CPU over the window (cores): daemon {cores[0]} + its MQTT link process "
          f"{link_cores}, mosquitto {cores[1]}, "
          f"load generator {cores[2]} (2 cores shared with everything else on the machine); "
          f"{batch} taps per writer transaction")
    per_tap = {k: round(c * 1000.0 / rate, 3) if rate else None for k, c in
               (("daemon", cores[0]), ("link_process", link_cores), ("broker", cores[1]),
                ("load_generator", cores[2]))}
    print("CPU per tap (ms): " + ", ".join(f"{k} {v}" for k, v in per_tap.items())
          + f"; the daemon's process alone could do {1000.0 / per_tap['daemon']:.0f} taps/s "
          "on one free core" if per_tap["daemon"] else "")
    print(f"writer: {tx_ms} ms per transaction (BEGIN .. durable COMMIT), busy "
          f"{writer_busy:.0%} of the window in transactions; its thread's CPU per tap: "
          f"{writer_us['transaction']} us in transactions, {writer_us['answer']} us answering "
          f"after COMMIT; {led_share:.1%} of the taps decided by the thread that read them")
    print(f"garbage collector pauses per tap (us), generations 0, 1, 2: {gc_us}")
    print(f"daemon exit code {proc.returncode} (SIGTERM)")
    print(json.dumps({"bench": "throughput", "devices": a.devices, "taps_per_s": round(rate, 1),
                      "taps": decided, "sent": sent, "stored": stored, "lost": lost,
                      "duplicates": dupes, "bad": bad, "target_taps_per_s": 4000,
                      "zero_loss": lost == 0 and stored == decided and dupes == 0,
                      "batch": batch, "cpu_daemon": cores[0], "cpu_link_process": link_cores, "cpu_broker": cores[1],
                      "cpu_load_generator": cores[2],
                      "cpu_ms_per_tap": per_tap, "mqtt_process": a.mqtt_process,
                      "transaction_ms": tx_ms, "writer_cpu_us": writer_us, "gc_us": gc_us,
                      "writer_busy": writer_busy, "led_share": led_share}))
    return 0 if lost == 0 and stored == decided else 1


if __name__ == "__main__":
    sys.exit(finish(main()))
