# Runs on CPython (host): the daemon's sales desk — arms sales through the writer and shows them on the reader.
"""Sales on readers, as the daemon runs them (``host.rules.sales`` holds the rules and rows).

:class:`SaleDesk` is what the HTTP API calls: ``arm`` checks the reader is registered, of a
kind that sells and ONLINE (an offline reader never takes a sale: ``Conflict``), arms the
sale on the writer thread (idempotent with the request's key) and sends the reader a SALE
frame over the link it last spoke on; ``cancel`` ends an armed sale and clears the reader's
display; ``tick`` (once a second) expires sales past their time; ``offline`` denies the sale
of a reader that dropped off. Every change of a sale is published as a ``sale`` event, and
``wait`` lets a request wait for a sale to settle (the API's long poll).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from host.errors import Conflict, InputError, NotFound
from host.rules import sales as rules
from host.site.publish import Publisher
from host.site.registry import DeviceState, Registry
from host.site.writer import Writer, WriterClosed
from host.store.site_state import Reader
from protocol import packet as pk

log = logging.getLogger("tapkiosk.sales")

#: Seconds a request waits for the writer.
WRITE_TIMEOUT_S = 30.0


class SaleDesk:
    """See the module doc."""

    def __init__(self, writer: Writer, registry: Registry, reader: Reader,
                 publisher: Publisher) -> None:
        self.writer = writer
        self.registry = registry
        self.reader = reader
        self.publisher = publisher
        self._settled = threading.Condition()
        #: The last state published of each sale that settled (read by ``wait`` without a query).
        self._done: dict[int, dict[str, Any]] = {}

    def _write(self, fn: Any) -> Any:
        engine = self.writer.engine

        def job(db: Any) -> Any:
            with engine.transaction() as conn:
                return fn(conn, int(engine.clock().timestamp()))

        return self.writer.call(job).result(WRITE_TIMEOUT_S)

    def arm(self, device_id: str, *, amount_fen: int | None = None,
            items: list[dict[str, Any]] | None = None, service: int = 0,
            timeout_s: int = rules.DEFAULT_TIMEOUT_S, key: str | None = None,
            actor: str = "", points: str | int | None = None) -> dict[str, Any]:
        """Arm a sale on an online reader and show it there; returns the sale (``replayed``
        True for a retried request, which shows the sale again while it is armed).
        ``points``: pay part of it with points (``host.rules.sales.points_request``)."""
        st = self.registry.device(device_id)
        if st is None:
            raise NotFound(f"unknown device {device_id!r}")
        if st.kind not in rules.SALE_KINDS:
            raise InputError(f"device {device_id} is a {st.kind}: sales are for kiosk and "
                             "wash readers")
        if not st.online or st.send is None:
            raise Conflict(f"reader {device_id} is offline: it cannot take a sale")
        policy = self.writer.engine.policy
        sale = self._write(lambda conn, ts: rules.arm(
            conn, policy, device_id, amount_fen=amount_fen, items=list(items or []),
            service=service, timeout_s=timeout_s, key=key, actor=actor, ts=ts, points=points))
        if sale["state"] == "armed":
            self._show(st, sale)
        if not sale["replayed"]:
            self.changed(sale)
        return sale

    def button(self, device_id: str, program: int) -> None:
        """A wash bay's program button: arm that program's sale and show it (program and
        price from the policy); a sale armed through the API is left alone."""
        st = self.registry.known(device_id)
        if st is None:
            return
        policy = self.writer.engine.policy
        try:
            sale, replaced = self._write(lambda conn, ts: rules.arm_button(
                conn, policy, device_id, program, ts))
        except (InputError, Conflict) as e:
            log.info("device=%s button %d: %s", device_id, program, e)
            return
        for sid in replaced:
            self.changed(self.get(sid))
        self._show(st, sale)
        self.changed(sale)

    def cancel(self, sale_id: int) -> dict[str, Any]:
        """Cancel an armed sale (a cancelled one is returned as it is) and clear the display."""
        before = self.get(sale_id)
        sale = self._write(lambda conn, ts: rules.cancel(conn, sale_id, ts))
        if before["state"] == "armed":
            self._clear(sale)
            self.changed(sale)
        return sale

    def get(self, sale_id: int) -> dict[str, Any]:
        """A sale as the API shows it (NotFound when unknown)."""
        return self.reader.run(lambda db: rules.get(db, sale_id))

    def wait(self, sale_id: int, timeout: float) -> dict[str, Any]:
        """The sale once it is no longer armed, or as it is after ``timeout`` seconds."""
        sale = self.get(sale_id)
        deadline = time.monotonic() + timeout
        with self._settled:
            while sale["state"] == "armed":
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._settled.wait(min(left, 1.0))
                sale = self._done.get(sale_id) or self.get(sale_id)
        return sale

    def changed(self, sale: dict[str, Any]) -> None:
        """Publish a sale's new state and wake the requests waiting for it."""
        self.publisher.sale(sale)
        with self._settled:
            if sale["state"] != "armed":
                self._done[sale["id"]] = sale
                while len(self._done) > 256:       # only recent ones are waited for
                    del self._done[next(iter(self._done))]
            self._settled.notify_all()

    def settled(self, sale_id: int) -> None:
        """A tap settled ``sale_id`` (called after its DECISION was sent)."""
        try:
            self.changed(self.get(sale_id))
        except (NotFound, TimeoutError, WriterClosed):
            pass

    def tick(self) -> None:
        """Expire sales past their time; clear them on their readers."""
        now = int(self.writer.engine.clock().timestamp())
        if not self.reader.run(lambda db: rules.armed_until(db, now)):
            return
        ids = self._write(lambda conn, ts: rules.expire(conn, ts))
        for sid in ids:
            sale = self.get(sid)
            self._clear(sale)
            self.changed(sale)

    def offline(self, device_id: str) -> None:
        """The reader dropped off: its armed sale is denied (``offline``), never paid. Does not
        wait for the writer (called from link threads)."""
        engine = self.writer.engine

        def job(db: Any) -> list[int]:
            with engine.transaction() as conn:
                return rules.end_for_device(conn, device_id, int(engine.clock().timestamp()),
                                            "offline")

        def done(fut: Any) -> None:
            if fut.exception() is None:
                for sid in fut.result():
                    self.settled(sid)

        try:
            self.writer.call(job).add_done_callback(done)
        except WriterClosed:
            pass

    # ----------------------------------------------------------------- the reader
    def _show(self, st: DeviceState, sale: dict[str, Any]) -> None:
        left = max(1, sale["expires_at"] - sale["created_at"])
        self._send(st, {"sale_id": sale["id"], "amount": sale["amount_fen"],
                        "service": sale["service"], "timeout_s": min(left, 3600),
                        "text": sale["text"]})

    def _clear(self, sale: dict[str, Any]) -> None:
        st = self.registry.known(sale["device_id"])
        if st is not None and st.online:
            self._send(st, {"sale_id": sale["id"], "amount": 0, "service": 0, "timeout_s": 0,
                            "text": ""})

    def _send(self, st: DeviceState, fields: dict[str, Any]) -> None:
        send = st.send
        if send is None:
            return
        try:
            send(self.registry.encode(st, pk.SALE, fields))
        except Exception as e:  # noqa: BLE001 - the sale stands; the reader may miss the display
            log.warning("device=%s cannot send SALE %d: %s", st.device_id, fields["sale_id"], e)
