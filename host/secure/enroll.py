# Runs on CPython (host): enrol a secure card — personalise a blank NTAG 424 DNA through an NFC reader (nfcpy) and record it.
"""``tapkiosk card enroll UID --member M --secure --reader R``.

``enroll_secure(admin, member_id, uid, connect)`` checks the request against the store,
personalises the card (``host.secure.personalise.personalise``) with the newest site key
and records ``secure = 1``, ``key_version`` and ``sun_counter`` in one transaction (with the
admin idempotency key). ``connect(uid)`` is a context manager that yields the card's APDU
``transceive``; ``nfc_reader(spec)`` builds one on an nfcpy reader:

* any nfcpy device path: ``usb``, ``usb:054c:06c3``, ``tty:USB0:pn532``, ``udp:HOST:PORT``;
* ``pn532:/path/to/serial`` — a PN532 on HSU at any serial device path (a
  ``/dev/serial/by-id`` name, a pty), which nfcpy's ``tty:`` form cannot name.

Refusals (all exit 2, nothing written to the store, nothing written to the card unless it
says so): UID that is not 7 bytes, unknown member, card enrolled to someone else, no site
key, no reader, no card or another card on the reader, a card that is not an ISO-DEP card,
a card that is not blank. A card already personalised with this site's keys for this UID
(the store write was lost) is recognised by its SUN message and recorded without touching it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, ContextManager

from host.admin import Admin
from host.store.uid import canonical_uid
from host.errors import Conflict, InputError, NotFound
from host.secure.personalise import ndef_url, personalise, read_ndef
from host.secure.sun import SecureCardError, SunVerifier, parse_sun, site_card_keys
from host.secure.check import site_key

__all__ = ["EnrollError", "enroll_secure", "nfc_reader", "read_sun_field"]

Transceive = Callable[[bytes], bytes]


class EnrollError(InputError):
    """A secure enrolment the reader or the card refused (exit 2)."""


def _existing(conn: Any, uid: str) -> tuple | None:
    return conn.execute("SELECT member_id, status, secure, key_version, sun_counter FROM cards "
                        "WHERE uid = ?", (uid,)).fetchone()


def _result(uid: str, member_id: int, key_version: int, counter: int) -> dict[str, Any]:
    return {"uid": uid, "member_id": member_id, "status": "active", "secure": True,
            "key_version": key_version, "sun_counter": counter}


def enroll_secure(admin: Admin, member_id: int, uid: str,
                  connect: Callable[[str], ContextManager[Transceive]],
                  *, expires_at: int = 0, key: str | None = None) -> dict[str, Any]:
    """Personalise the blank NTAG 424 DNA ``uid`` for ``member_id`` and record it secure.

    Idempotent: the card already enrolled secure to this member returns its record without
    touching the reader (``"unchanged": True``). A card enrolled plain to the same member is
    upgraded. Raises InputError/NotFound/Conflict (exit 2) for every refusal.
    """
    uid = canonical_uid(uid)
    if len(uid) != 14:
        raise InputError(f"secure cards are NTAG 424 DNA with 7-byte UIDs, got {uid}")
    db = admin.db
    if db.execute("SELECT 1 FROM members WHERE id = ?", (member_id,)).fetchone() is None:
        raise NotFound(f"unknown member {member_id}")
    row = _existing(db.conn, uid)
    if row is not None:
        owner, status, secure, kv, ctr = row
        if owner != member_id or status != "active":
            raise Conflict(f"card {uid} is already enrolled (member {owner}, {status})")
        if secure:
            return {**_result(uid, member_id, kv, ctr), "unchanged": True}
    version, master = site_key(db.conn)
    with connect(uid) as transceive:
        try:
            res = personalise(transceive, bytes.fromhex(uid), master, version)
            counter = res.counter
        except SecureCardError as e:
            counter = _already_ours(transceive, uid, master, version)
            if counter is None:
                raise EnrollError(f"card {uid}: {e}") from None

    def fn(conn: Any, ts: int, now: Any) -> dict[str, Any]:
        cur = _existing(conn, uid)
        if cur is None:
            conn.execute("INSERT INTO cards (uid, member_id, expires_at, created_at, updated_at,"
                         " key_version, secure, sun_counter) VALUES (?,?,?,?,?,?,1,?)",
                         (uid, member_id, expires_at, ts, ts, version, counter))
        elif cur[0] == member_id and cur[1] == "active":
            conn.execute("UPDATE cards SET key_version = ?, secure = 1, sun_counter = ?, "
                         "updated_at = ? WHERE uid = ?", (version, counter, ts, uid))
        else:
            raise Conflict(f"card {uid} is already enrolled (member {cur[0]}, {cur[1]})")
        return _result(uid, member_id, version, counter)
    return admin.write("card.enroll_secure", dict(member_id=member_id, uid=uid,
                                                   expires_at=expires_at), key, fn)


def _already_ours(transceive: Transceive, uid: str, master: bytes, version: int) -> int | None:
    """The SUN counter if the card already carries this site's keys for ``uid`` (a
    personalisation whose store write was lost), else None."""
    try:
        url = ndef_url(read_ndef(transceive))
    except (SecureCardError, OSError):
        return None
    r = SunVerifier().verify(uid, url, site_card_keys(master, bytes.fromhex(uid), version), -1)
    return r.counter if r.ok else None


def read_sun_field(transceive: Transceive) -> bytes:
    """One reader-side read of a card's NDEF file, as ``firmware/sun.py`` does it: the binary
    TAP secure field (``0x01 | PICCData | SDMMAC``), or ``b""`` when the card has no NDEF
    application or no SUN mirror. For host-attached readers (``transceive`` = nfcpy's
    ``Type4Tag.transceive``); communication errors propagate."""
    try:
        return parse_sun(ndef_url(read_ndef(transceive))).to_field()
    except SecureCardError:
        return b""


def nfc_reader(spec: str, wait_s: float = 10.0) -> Callable[[str], ContextManager[Transceive]]:
    """A ``connect(uid)`` for ``enroll_secure`` on the nfcpy reader ``spec`` (see module doc).

    The reader is opened when ``connect`` is entered and closed on leaving; it waits up to
    ``wait_s`` seconds for a card, checks its UID and activates it as an ISO-DEP card.
    """

    @contextlib.contextmanager
    def connect(uid: str) -> Iterator[Transceive]:
        try:
            import nfc
            import nfc.clf
            import nfc.tag.tt4
        except ImportError as e:
            raise EnrollError(f"nfcpy is not installed ({e})") from None
        clf = _open(nfc, spec)
        try:
            target = None
            deadline = time.monotonic() + wait_s
            while target is None:
                target = clf.sense(nfc.clf.RemoteTarget("106A"))
                if target is None:
                    if time.monotonic() >= deadline:
                        raise EnrollError(f"no card on the reader {spec} (waited {wait_s:g} s)")
                    time.sleep(0.1)
            seen = bytes(target.sdd_res or b"").hex().upper()
            if seen != uid:
                raise EnrollError(f"the card on the reader is {seen or 'unknown'}, not {uid}")
            tag = nfc.tag.activate(clf, target)
            if not isinstance(tag, nfc.tag.tt4.Type4Tag):
                raise EnrollError(f"card {uid} is not an ISO-DEP card (NTAG 424 DNA)")

            def transceive(apdu: bytes) -> bytes:
                try:
                    return bytes(tag.transceive(bytes(apdu)))
                except nfc.tag.TagCommandError as e:
                    raise SecureCardError(f"card communication failed: {e}") from None
            yield transceive
        finally:
            clf.close()
    return connect


def _open(nfc: Any, spec: str) -> Any:
    clf = nfc.ContactlessFrontend()
    if spec.startswith("pn532:"):
        import nfc.clf.pn532
        import nfc.clf.transport
        path = spec[len("pn532:"):]
        try:
            device = nfc.clf.pn532.init(nfc.clf.transport.TTY(path))
        except Exception as e:  # noqa: BLE001 - nfcpy raises OSError, IOError or its own
            raise EnrollError(f"no reader at {spec}: {e}") from None
        device._path = path  # what nfc.clf.device.connect sets
        clf.device = device
        return clf
    try:
        ok = clf.open(spec)
    except Exception as e:  # noqa: BLE001
        raise EnrollError(f"no reader at {spec}: {e}") from None
    if not ok:
        raise EnrollError(f"no reader at {spec}")
    return clf
