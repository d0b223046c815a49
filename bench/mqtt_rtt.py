# Runs on CPython: benchmark of the tap -> decision round trip over MQTT against a raw QoS-1 echo.
"""Tap -> DECISION round trip through mosquitto, against a raw paho QoS-1 echo (same run).

Starts a mosquitto on loopback with ``set_tcp_nodelay true``, the daemon as a subprocess and
an echo subprocess (a bare paho client that republishes what it gets, QoS 1). A simulated
kiosk (``sim.device.SimDevice`` over MQTT) then times ``--taps`` taps one after the other, and
a bare paho client times as many echo round trips of a same-sized payload, interleaved so
both see the same machine load, and as many through an echo that first makes the bare durable
SQLite write of ``bench/ledger.py`` (the floor of any reply that waits for a durable commit:
``durable_echo_p99_ms``, ``ratio_p99_durable_echo``). Prints p50/p99 of the three and the
tap's p99 ratio to the raw echo (target: ratio <= 2 and tap p99 < 2.5 ms), and the split of
the mean tap: inside the daemon (frame handed to the service -> decision handed to paho, from
its metrics endpoint) against everything else (device, broker, paho threads on both ends).

Usage: ``python bench/mqtt_rtt.py [--taps 500]``. Last line JSON.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from support import (Args, BareStore, Broker, finish, hist, pct, scrape,  # noqa: E402
                     start_daemon, stop, work_dir)


def _client(cid: str, host: str, port: int) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True)

    def on_connect(client, userdata, flags, rc, props=None):  # noqa: ANN001
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.on_connect = on_connect
    c.connect(host, port)
    return c


def echo(host: str, port: int, db_path: str) -> None:
    """The echo process: republish bench/ping on bench/pong, and bench/dping on bench/dpong
    after a bare durable write to the SQLite database ``db_path``; QoS 1."""
    commit = BareStore(db_path).commit

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == "bench/dping":
            commit()
            client.publish("bench/dpong", msg.payload, qos=1)
        else:
            client.publish("bench/pong", msg.payload, qos=1)
    c = _client("bench-echo", host, port)
    c.on_message = on_message
    c.subscribe([("bench/ping", 1), ("bench/dping", 1)])
    c.loop_forever()


class Pinger:
    """Times QoS-1 round trips through the echo process."""

    def __init__(self, host: str, port: int) -> None:
        self.got = threading.Event()
        self.c = _client("bench-pinger", host, port)
        self.c.on_message = lambda client, u, msg: self.got.set()
        sub = threading.Event()
        self.c.on_subscribe = lambda *a: sub.set()
        self.c.subscribe([("bench/pong", 1), ("bench/dpong", 1)])
        self.c.loop_start()
        sub.wait(5)

    def once(self, payload: bytes, durable: bool = False) -> float:
        """One round trip; ``durable``: the echo makes a bare durable commit first."""
        self.got.clear()
        t0 = time.perf_counter()
        self.c.publish("bench/dping" if durable else "bench/ping", payload, qos=1)
        if not self.got.wait(5):
            raise RuntimeError("echo did not answer")
        return (time.perf_counter() - t0) * 1000.0


def components(m0: dict[str, float], m1: dict[str, float]) -> dict[str, dict[str, float]]:
    """Where a tap's time goes in the daemon: the whole (received -> DECISION handed to the
    link), the wait for the writer thread, the transaction with its durable COMMIT, the
    garbage collector's pauses per generation."""
    out = {"daemon": hist(m0, m1, "tapkiosk_tap_latency_seconds"),
           "writer_queue": hist(m0, m1, "tapkiosk_writer_queue_seconds"),
           "transaction": hist(m0, m1, "tapkiosk_writer_transaction_seconds")}
    for g in range(3):
        out[f"gc{g}"] = hist(m0, m1, "tapkiosk_gc_pause_seconds", f'{{generation="{g}"}}')
    return out


def main(argv: list[str] | None = None) -> int:
    ap = Args(description=__doc__.splitlines()[0])
    ap.add_argument("--taps", type=int, default=500)
    ap.add_argument("--echo", nargs=3, metavar=("HOST", "PORT", "DB"), help=argparse.SUPPRESS)
    ap.add_argument("--mqtt-process", choices=("on", "off"), default="on",
                    help="the daemon's MQTT link in a child process (on) or in-process (off)")
    a = ap.parse_args(argv)
    if a.taps < 1:
        ap.error("--taps must be at least 1")
    if a.echo:
        echo(a.echo[0], int(a.echo[1]), a.echo[2])
        return 0
    from daemon_support import CARD, KEY_A, make_site

    from sim.device import MqttTransport, NoReply, SimDevice

    tmp = work_dir()
    db = tmp / "site.db"
    make_site(db)
    broker = Broker(tmp)
    procs = [subprocess.Popen([sys.executable, __file__, "--echo", broker.host, str(broker.port),
                               str(tmp / "echo.db")])]
    try:
        daemon, mport = start_daemon(db, tmp, "--mqtt", broker.address,
                                     "--mqtt-process", a.mqtt_process)
        procs.insert(0, daemon)
        dev = SimDevice("kiosk-1", KEY_A, "kiosk", MqttTransport(broker.host, broker.port))
        for attempt in range(5):   # the daemon may still be subscribing on a loaded machine
            try:
                dev.hello()
                break
            except NoReply:
                if attempt == 4:
                    raise
        pinger = Pinger(broker.host, broker.port)
        _, sample = dev.tap_frame(CARD, amount_fen=1)
        dev.outbox.clear()
        payload = bytes(len(sample))
        for _ in range(50):      # warm-up
            dev.tap(CARD, amount_fen=1)
            pinger.once(payload)
            pinger.once(payload, durable=True)
        m0 = scrape(mport)
        taps, echoes, durable = [], [], []
        for _ in range(a.taps):
            t0 = time.perf_counter()
            dev.tap(CARD, amount_fen=1)
            taps.append((time.perf_counter() - t0) * 1000.0)
            echoes.append(pinger.once(payload))
            durable.append(pinger.once(payload, durable=True))
        m1 = scrape(mport)
        dev.close()
    finally:
        for p in procs:
            stop(p)
        broker.stop()
    t50, t99 = statistics.median(taps), pct(taps, 99)
    e50, e99 = statistics.median(echoes), pct(echoes, 99)
    d50, d99 = statistics.median(durable), pct(durable, 99)
    print(f"tap -> decision over MQTT ({a.taps} taps): p50 {t50:.2f} ms, p99 {t99:.2f} ms")
    print(f"raw paho QoS-1 echo, same broker:     p50 {e50:.2f} ms, p99 {e99:.2f} ms")
    print(f"echo after a bare durable SQLite write (UPDATE + INSERT, as bench/ledger.py's "
          f"bare): p50 {d50:.2f} ms, p99 {d99:.2f} ms, p99 {d99 / e99:.2f}x the raw echo's")
    lat = "tapkiosk_tap_latency_seconds_"
    n = m1[lat + "count"] - m0[lat + "count"]
    inside = (m1[lat + "sum"] - m0[lat + "sum"]) / n * 1000.0 if n else float("nan")
    mean = statistics.fmean(taps)
    print(f"p99 ratio {t99 / e99:.2f} (target <= 2); tap p99 target < 2.5 ms")
    print(f"mean tap {mean:.2f} ms = in the daemon {inside:.2f} ms (parse, MAC, queue to the "
          f"writer, decide + durable commit, encode, publish) + outside {mean - inside:.2f} ms "
          f"(device, broker, paho; the raw echo's mean is {statistics.fmean(echoes):.2f} ms)")
    parts = components(m0, m1)
    led = "tapkiosk_writer_led_taps_total"
    led_share = round((m1.get(led, 0.0) - m0.get(led, 0.0)) / n, 3) if n else None
    print(f"taps decided by the thread that read them (the writer idle): {led_share}")
    print("in the daemon, per part (count, mean, p99 by bucket bound, ms): " + "; ".join(
        f"{k} {v['n']} x {v['mean_ms']:.3f}, p99 <= {v['p99_ms']:g}" for k, v in parts.items()))
    print(json.dumps({"bench": "mqtt_rtt", "taps": a.taps, "parts": parts,
                      "mqtt_process": a.mqtt_process, "tap_p50_ms": round(t50, 3),
                      "tap_p99_ms": round(t99, 3), "echo_p50_ms": round(e50, 3),
                      "echo_p99_ms": round(e99, 3), "ratio_p99": round(t99 / e99, 2),
                      "durable_echo_p50_ms": round(d50, 3), "durable_echo_p99_ms": round(d99, 3),
                      "ratio_p99_durable_echo": round(d99 / e99, 2),
                      "ratio_p50": round(t50 / e50, 2), "tap_mean_ms": round(mean, 3),
                      "daemon_mean_ms": round(inside, 3), "led_share": led_share}))
    return 0


if __name__ == "__main__":
    sys.exit(finish(main()))
