# Runs on CPython (host): refused frames — counted per device and cause, logged, answered or not.
"""What the daemon does with a frame it refuses.

Every refusal counts in ``tapkiosk_frames_rejected_total{cause,device}`` (``device`` is a
registered device's id or ``unknown``, so the label set stays bounded), in the device's
refusal counts and last error (persisted with the device state, for ``report devices``), and
in a log line rate-limited per device and cause.

The answer: an ERROR MAC'd with the device's key, naming the refused seq, only for a frame
that proved it came from the device (its MAC checked). A frame whose MAC fails, or that
names no registered device, gets no answer at all: an ERROR ``bad_mac`` for the seq a forged
frame claims would tell the real device to give up on that seq (host/SECURE.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from host.rules.engine import clip_text
from host.site.metrics import Metrics
from host.site.ratelog import RateLimitedLog
from host.site.registry import DeviceState, Registry
from protocol import packet as pk

log = logging.getLogger("tapkiosk.service")

Send = Callable[[bytes], None]


class Refusals:
    """See the module doc."""

    def __init__(self, registry: Registry, metrics: Metrics, clock: Callable[[], float]) -> None:
        self.registry = registry
        self.metrics = metrics
        self.clock = clock
        self._log = RateLimitedLog(log)
        self._lock = threading.Lock()

    def refuse(self, cause: str, st: DeviceState | None, p: pk.Packet | None, send: Send,
               link: str, why: str, err_code: int = 0) -> None:
        """Count, log and (for an authenticated frame with ``err_code``) answer an ERROR."""
        device = st.device_id if st is not None else "unknown"
        self.metrics.rejected.labels(cause, device).inc()
        if st is not None:
            with self._lock:
                st.refused[cause] = st.refused.get(cause, 0) + 1
                st.last_error = f"{cause}: {why}"[:200]
                st.last_error_at = int(self.clock())
        self._log((cause, device, link), logging.WARNING,
                  "refused cause=%s device=%s seq=%s link=%s: %s", cause,
                  p.device_id if p is not None else "-", p.seq if p is not None else "-",
                  link or "-", why)
        if st is None or p is None or not err_code or cause == "bad_mac":
            return
        try:
            send(self.registry.encode(st, pk.ERROR, {"ref_seq": p.seq, "code": err_code,
                                                     "text": clip_text(why)}))
        except Exception as e:  # noqa: BLE001 - a broken link must not break the handler
            log.warning("device=%s cannot send ERROR: %s", st.device_id, e)

    def take(self) -> list[tuple[str, str, int, int, str]]:
        """The refusals counted since the last call, as rows for ``save_refusals``."""
        rows = []
        with self._lock:
            for st in self.registry.devices():
                for cause, n in st.refused.items():
                    rows.append((st.device_id, cause, n, st.last_error_at, st.last_error))
                st.refused.clear()
        return rows
