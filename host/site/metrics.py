# Runs on CPython (host): Prometheus metrics of the daemon (taps, rejected frames, latency, devices).
"""Daemon metrics.

Every daemon owns one :class:`Metrics` with its own ``CollectorRegistry`` (so tests can run
several daemons in one process). ``serve(port)`` exposes them over HTTP for Prometheus.

Names:

- ``tapkiosk_taps_total{verdict,reason}``: taps decided (retransmissions not counted again).
- ``tapkiosk_frames_total{type}``: authenticated frames received, by message type.
- ``tapkiosk_frames_rejected_total{cause,device}``: frames refused (malformed, bad_mac,
  unknown_device, replay, topic_mismatch, line_mismatch, bad_frame, internal, void_refused);
  ``device`` is a registered device's id or ``unknown`` (the label set stays bounded).
- ``tapkiosk_retransmits_total``: retransmissions answered from the reply cache or store.
- ``tapkiosk_voids_total{outcome}``: VOIDs answered (reversed, tombstone, repeat, refused).
- ``tapkiosk_tap_latency_seconds``: frame received by the link (time queued in the link
  included) -> decision handed to the link's send queue.
- ``tapkiosk_writer_batch_size``: taps per writer transaction (group commit).
- ``tapkiosk_writer_cpu_seconds_total{phase}``: the writer thread's own CPU time on batches
  of taps: ``transaction`` (BEGIN .. durable COMMIT: the engine, the DECISION encoder, SQLite)
  and ``answer`` (after the COMMIT: each tap's callback, its DECISION handed to its link).
- ``tapkiosk_writer_led_taps_total``: taps decided by the thread that read them, the writer
  being idle (leader/follower; the rest were queued for the writer thread).
- ``tapkiosk_devices_online``: devices currently online.
- ``tapkiosk_link_up{link}``: 1 while a link's transport is open (port, broker, reader).
- ``tapkiosk_link_dropped_total{link}``: frames a link could not send (its send queue full
  or the write failed); the device resends.
- ``tapkiosk_store_retries{sqlstate}``: transactions PostgreSQL rolled back and that were run
  again since the process started: serialization failure (40001), deadlock (40P01), a tap
  another daemon stored first (23505) (``host.store.db.RETRIES``; always 0 on SQLite).
"""

from __future__ import annotations

import threading
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from host.store.db import RETRIES

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
#: Finer, for the parts of a tap's time (issue 19: where the p99 goes).
_STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01,
                  0.02, 0.05, 0.1, 0.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The daemon's counters, histograms and gauges in a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.taps = Counter("tapkiosk_taps", "Taps decided", ["verdict", "reason"], registry=r)
        self.frames = Counter("tapkiosk_frames", "Authenticated frames received", ["type"],
                              registry=r)
        self.rejected = Counter("tapkiosk_frames_rejected", "Frames refused",
                                ["cause", "device"], registry=r)
        self.retransmits = Counter("tapkiosk_retransmits", "Retransmissions answered again",
                                   registry=r)
        self.voids = Counter("tapkiosk_voids", "VOIDs answered (taps the device gave up on)",
                             ["outcome"], registry=r)
        self.latency = Histogram("tapkiosk_tap_latency_seconds",
                                 "Tap frame received -> decision sent", buckets=_LATENCY_BUCKETS,
                                 registry=r)
        self.batch = Histogram("tapkiosk_writer_batch_size", "Taps per writer transaction",
                               buckets=_BATCH_BUCKETS, registry=r)
        self.transaction = Histogram(
            "tapkiosk_writer_transaction_seconds", "One writer transaction of taps, from "
            "BEGIN to the durable COMMIT", buckets=_STAGE_BUCKETS, registry=r)
        self.writer_cpu = Counter("tapkiosk_writer_cpu_seconds", "The writer thread's CPU "
                                  "time on batches of taps", ["phase"], registry=r)
        self.writer_led = Counter("tapkiosk_writer_led_taps", "Taps decided by the thread "
                                  "that read them (the writer was idle)", registry=r)
        self.writer_queue = Histogram(
            "tapkiosk_writer_queue_seconds", "A transaction's first tap: submitted -> taken "
            "by the writer thread", buckets=_STAGE_BUCKETS, registry=r)
        self.gc_pause = Histogram("tapkiosk_gc_pause_seconds", "Pauses of the cyclic garbage "
                                  "collector", ["generation"], buckets=_STAGE_BUCKETS,
                                  registry=r)
        self.online = Gauge("tapkiosk_devices_online", "Devices online", registry=r)
        self.link_up = Gauge("tapkiosk_link_up", "Link transport open (1) or not (0)", ["link"],
                             registry=r)
        self.link_dropped = Counter("tapkiosk_link_dropped", "Frames a link could not send",
                                    ["link"], registry=r)
        self.retries = Gauge("tapkiosk_store_retries", "Transactions run again after a "
                             "serialization failure or deadlock", ["sqlstate"], registry=r)
        for state in RETRIES:
            self.retries.labels(state).set_function(partial(RETRIES.get, state, 0))
        self._server: Any = None
        self._lock = threading.Lock()

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Start the HTTP exporter on ``addr:port`` (0 = any free port); returns the port."""
        with self._lock:
            server, _thread = start_http_server(port, addr=addr, registry=self.registry)
            self._server = server
            return server.server_address[1]

    def close(self) -> None:
        """Stop the HTTP exporter if it runs."""
        with self._lock:
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()
                self._server = None

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels`` (0.0 when there
        is none), for tests and the demo."""
        total = 0.0
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    total += sample.value
        return total
