# Runs on CPython (host): NFC link — a reader attached to the site PC through nfcpy (USB or udp:).
"""Host-attached NFC reader.

A PC kiosk without an ESP32: nfcpy's ``ContactlessFrontend`` on ``usb``, ``usb:BUS:DEV``,
``tty:PORT`` or ``udp:HOST:PORT`` (nfcpy's simulator). Every card sensed becomes an engine
``Tap`` for the registered device ``device_id`` with a host-side seq
(``boot << 16 | counter``, the boot persisted in ``devices.last_seq`` at start, so seqs never
repeat across restarts). The same card held on the reader is one tap: a UID seen again within
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
from host.store.devices import touch_device

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

    def start(self) -> "NfcLink":
        """Check the device is registered, take a new seq boot, start reading."""
        st = self.service.device(self.device_id)
        if st is None:
            raise HostError(f"nfc_device {self.device_id!r} is not registered "
                            "(tapkiosk device add ...)")
        dev = self.device_id

        def new_boot(db: Any) -> int:
            row = db.execute("SELECT max(last_seq, coalesce((SELECT max(seq) FROM taps WHERE "
                             "device_id = ?), 0)) FROM devices WHERE device_id = ?",
                             (dev, dev)).fetchone()
            boot = ((row[0] >> 16) + 1) & 0xFFFF
            touch_device(db, dev, last_seq=boot << 16)
            return boot

        self._boot = self.service.writer.call(new_boot).result(30)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading and close the reader."""
        self._stop.set()
        self._thread.join(timeout)

    def _next_seq(self) -> int:
        self._ctr += 1
        if self._ctr > 0xFFFF:
            self._boot, self._ctr = (self._boot + 1) & 0xFFFF, 1
            boot, dev = self._boot, self.device_id
            self.service.writer.call(lambda db: touch_device(db, dev, last_seq=boot << 16))
        return (self._boot << 16) | self._ctr

    def _run(self) -> None:
        import nfc

        while not self._stop.is_set():
            try:
                clf = nfc.ContactlessFrontend(self.path)
            except (OSError, IOError) as e:
                log.warning("nfc %s: cannot open: %s", self.path, e)
                self._stop.wait(_RETRY_S)
                continue
            log.info("nfc %s: open, acting as %s", self.path, self.device_id)
            self.opened.set()
            try:
                while not self._stop.is_set():
                    clf.connect(rdwr={"on-connect": self._on_tag, "interval": 0.05,
                                      "beep-on-connect": False},
                                terminate=self._stop.is_set)
            except Exception as e:  # noqa: BLE001 - a reader fault: reopen it
                log.warning("nfc %s: reader fault: %s", self.path, e)
                self._stop.wait(_RETRY_S)
            finally:
                self.opened.clear()
                clf.close()

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
                        self.path, uid, e)
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
            log.error("nfc %s: tap %s not decided: %s", self.path, uid, e)
        return False
