# Runs on CPython (host): a tap's decision event, count and leaving of the gate, once per writer batch on the reply thread.
"""``Tally``: what follows a decided tap on the reply thread, gathered per batch.

The reply thread runs a writer batch's jobs in one go (:class:`host.site.replies.ReplyThread`),
then calls ``end_batch``: the batch's decision events are published as one batch, its tap
counts added once per (verdict, reason), and only then do its frames leave the in-flight
gate, so ``drain`` returns once they are published and counted. Called from any other thread
(a tap made on the host itself) each is done at once."""

from __future__ import annotations

from typing import Any

from host.rules.engine import Decision, Tap
from host.site.inflight import InflightGate
from host.site.metrics import Metrics
from host.site.publish import Publisher
from host.site.replies import ReplyThread


class Tally:
    """See the module doc."""

    def __init__(self, replies: ReplyThread, publisher: Publisher, metrics: Metrics,
                 gate: InflightGate) -> None:
        self.replies, self.publisher, self.metrics, self.gate = replies, publisher, metrics, gate
        self._counters: dict[tuple[str, str], Any] = {}
        self._decided: list[tuple[Tap, Decision]] = []
        self._counts: dict[tuple[str, str], int] = {}
        self._dones = 0
        replies.after_batch.append(self.end_batch)

    def decision(self, tap: Tap, d: Decision) -> None:
        """The tap's decision event and, unless it is a replay, its count."""
        held = self.replies.on_thread()
        if held:
            self._decided.append((tap, d))
        else:
            self.publisher.decision(tap, d)
        if d.replayed:
            return
        key = (d.verdict, d.reason)
        if held:
            self._counts[key] = self._counts.get(key, 0) + 1
        else:
            self._counter(key).inc()

    def leave(self) -> None:
        """A decided frame leaves the gate."""
        if self.replies.on_thread():
            self._dones += 1
        else:
            self.gate.done()

    def _counter(self, key: tuple[str, str]) -> Any:
        counter = self._counters.get(key)
        if counter is None:   # labels() looks its child up under a lock: once per pair
            counter = self._counters[key] = self.metrics.taps.labels(*key)
        return counter

    def end_batch(self) -> None:
        """On the reply thread after each batch: see the module doc."""
        dones, self._dones = self._dones, 0
        try:
            if self._decided:
                decided, self._decided = self._decided, []
                self.publisher.decisions(decided)
            if self._counts:
                counts, self._counts = self._counts, {}
                for key, n in counts.items():
                    self._counter(key).inc(n)
        finally:
            if dones:
                self.gate.done(dones)
