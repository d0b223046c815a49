# Runs on CPython (host): NFC link — a reader attached to the site PC through nfcpy (USB or udp:).
"""Host-attached NFC reader.

A PC kiosk without an ESP32: nfcpy's ``ContactlessFrontend`` on ``usb``, ``usb:BUS:DEV``,
``tty:PORT`` or ``udp:HOST:PORT`` (nfcpy's simulator). Every card sensed becomes an engine
``Tap`` for the registered device ``device_id`` with a host-side seq
(``protocol.seq``: ``boot << 16 | counter``, the boot persisted in ``devices.last_seq`` at
start and when the counter runs out, so seqs never repeat across restarts). The same card held on the reader is one tap: a UID seen again within
``debounce_s`` is ignored. The decision is logged (and kept in ``last``); there is no frame and
no MAC on this path, the reader is inside the host.

An ISO-DEP (Type 4) card is read like the ESP32 firmware reads it (``firmware/sun.py``): its
NDEF file through ``host.secure.enroll.read_sun_field``, so a secure NTAG 424 DNA's SUN message
goes into ``Tap.secure`` and is verified by the engine (host/SECURE.md). A card taken away
mid-read is reported on its UID alone, as the firmware does (a secure card is then refused).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from host.rules.engine import Decision, Tap
from host.errors import HostError
from host.secure.enroll import read_sun_field
from host.site.service import Service
from host.secure.check import card_ref
from host.store import site_state as store
from protocol import seq as seqs

log = logging.getLogger("tapkiosk.nfc")

_RETRY_S = 2.0


class NfcLink:
    """Reads cards with nfcpy and decides them as ``device_id``; see the module doc."""

    def __init__(self, path: str, device_id: str, service: Service, *,
                 debounce_s: float = 1.5) -> None:
        self.path = path
        self.device_id = device_id
        self.service = service
        self.debounce_s = debounce_s
        self.name = f"nfc:{path}"
        self.last: Decision | None = None
        self.decided = 0
        self.opened = threading.Event()
        self._seen: dict[str, float] = {}
        self._boot = 0
        self._ctr = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"nfc {path}", daemon=True)
        self._up = service.metrics.link_up.labels(self.name)
        self._up.set(0)
        self._down_cause: str | None = None

    def start(self) -> "NfcLink":
        """Check the device is registered, take a new seq boot, start reading."""
        st = self.service.device(self.device_id)
        if st is None:
            raise HostError(f"nfc_device {self.device_id!r} is not registered "
                            "(tapkiosk device add ...)")
        dev = self.device_id
        self._boot = self.service.writer.call(lambda db: store.new_up_boot(db, dev)).result(30)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading and close the reader."""
        self._stop.set()
        self._thread.join(timeout)

    def _next_seq(self) -> int:
        self._ctr += 1
        if self._ctr > seqs.CTR_MAX:
            self._boot, self._ctr = seqs.next_boot(self._boot), 1
            boot, dev = self._boot, self.device_id
            self.service.writer.call(lambda db: store.save_up_boot(db, dev, boot))
        return seqs.make(self._boot, self._ctr)

    def _run(self) -> None:
        import nfc

        while not self._stop.is_set():
            try:
                clf = nfc.ContactlessFrontend(self.path)
            except (OSError, IOError) as e:
                self._down(f"cannot open: {e}")
                self._stop.wait(_RETRY_S)
                continue
            log.log(logging.WARNING if self._down_cause else logging.INFO,
                    "nfc %s: open, acting as %s", self.path, self.device_id)
            self._down_cause = None
            self._up.set(1)
            self.opened.set()
            try:
                while not self._stop.is_set():
                    clf.connect(rdwr={"on-connect": self._on_tag, "interval": 0.05,
                                      "beep-on-connect": False},
                                terminate=self._stop.is_set)
            except Exception as e:  # noqa: BLE001 - a reader fault: reopen it
                self._down(f"reader fault: {e}")
                self._stop.wait(_RETRY_S)
            finally:
                self._up.set(0)
                self.opened.clear()
                clf.close()

    def _down(self, cause: str) -> None:
        """Log a state change to down (once per cause, at WARNING)."""
        self._up.set(0)
        if cause != self._down_cause:
            self._down_cause = cause
            log.warning("nfc %s: link down: %s", self.path, cause)

    def _secure_field(self, tag: Any, uid: str) -> bytes:
        """The TAP secure field of an ISO-DEP card (``b""`` for other cards, for an ISO-DEP
        card without a SUN message, and when the card left mid-read)."""
        import nfc.clf
        import nfc.tag
        import nfc.tag.tt4

        if not isinstance(tag, nfc.tag.tt4.Type4Tag):
            return b""
        try:
            return read_sun_field(lambda apdu: bytes(tag.transceive(bytes(apdu))))
        except (nfc.clf.CommunicationError, nfc.tag.TagCommandError, OSError) as e:
            log.warning("nfc %s: card %s: SUN read failed (%s): deciding on the UID alone",
                        self.path, card_ref(uid), e)
            return b""

    def _on_tag(self, tag: Any) -> bool:
        uid = bytes(tag.identifier).hex().upper()
        now = time.monotonic()
        last = self._seen.get(uid)
        self._seen[uid] = now
        if last is not None and now - last < self.debounce_s:
            return False
        sel = getattr(tag.target, "sel_res", None)
        sak = sel[0] if sel else 0
        tap = Tap(device_id=self.device_id, seq=self._next_seq(), uid=uid, sak=sak,
                  secure=self._secure_field(tag, uid), device_time=int(time.time()))
        try:
            self.last = self.service.submit_local_tap(tap, link=self.name)
            self.decided += 1
        except Exception as e:  # noqa: BLE001 - logged; the member taps again
            log.error("nfc %s: tap of card %s not decided: %s", self.path, card_ref(uid), e)
        return False
