# Runs on CPython (host): the daemon's registry of devices — RAM state, keys, MAC check, down seqs.
"""Device registry and authentication.

``Registry.device(id)`` returns the RAM state of a registered device, loaded from the store
on first contact (replay window, down-seq boot, config versions). An id that is not
registered is looked up on a read-only connection, never on the single writer, and
remembered as unknown for ``UNKNOWN_TTL_S`` in a cache of at most ``UNKNOWN_MAX`` ids (the
oldest is forgotten first), so a flood of made-up ids costs neither the writer nor memory.

``verify(st, packet)`` checks the MAC with the device's key; when it does not match, the key
is re-read at most every ``KEY_RELOAD_S``: a new key (rotated, or ``tapkiosk device replace``)
takes effect without a restart, with the new sequence epoch that goes with it (replay
window, ``seq_base``, down-seq boot reloaded together).
``encode(st, type, fields)`` builds a host -> device frame with the next down seq
(``protocol.seq``: boot << 16 | counter, a new boot persisted when the counter runs out).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from hmac import compare_digest
from typing import Any, Callable

from host.site.hostmac import HostMac
from host.site.writer import Writer
from host.store.outage import StoreUnavailable, is_unavailable
from host.store import site_state as store
from protocol import packet as pk
from protocol import seq as seqs
from protocol.errors import AuthError
from protocol.mac import MAC_LEN, Mac
from protocol.replay import ReplayWindow

log = logging.getLogger("tapkiosk.service")

Send = Callable[[bytes], None]

UNKNOWN_TTL_S = 2.0     # how long "no such device" is remembered before asking the store again
UNKNOWN_MAX = 1024      # at most this many unknown ids remembered
KEY_RELOAD_S = 2.0      # at most one key re-read per device this often


@dataclass
class DeviceState:
    """What the daemon keeps in RAM about one device."""

    device_id: str
    kind: str
    key: bytes
    mac: Mac
    window: ReplayWindow
    down_boot: int
    down_ctr: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    down_lock: threading.Lock = field(default_factory=threading.Lock)
    online: bool = False
    last_seen: float = 0.0
    link: str = ""
    dirty: bool = False
    fw: str = ""
    key_checked: float = 0.0
    cfg_version: int = 0
    cfg_acked: int = 0
    cfg_pending: dict[int, int] = field(default_factory=dict)  # down seq -> cfg_version
    send: Send | None = None    # how to reach the device: the link it last spoke on
    refused: dict[str, int] = field(default_factory=dict)      # cause -> count not persisted
    last_error: str = ""
    last_error_at: int = 0
    seq_base: int = 0           # stored seq = seq_base + wire seq (host/store/devices.py)

    def stored(self, seq: int) -> int:
        """The store's seq for wire seq ``seq`` of this device's current key."""
        return self.seq_base + seq

    def wire(self, seq: int) -> int:
        """The wire seq of stored seq ``seq`` (a host-made seq below the base: itself)."""
        return seq - self.seq_base if seq > self.seq_base else seq


class Registry:
    """Registered devices seen since start; see the module doc."""

    def __init__(self, writer: Writer, reader: store.Reader, cache_size: int = 32) -> None:
        self.writer = writer
        self.cache_size = cache_size
        self._reader = reader
        self._devices: dict[str, DeviceState] = {}
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def known(self, device_id: str) -> DeviceState | None:
        """The RAM state of a device already loaded (no store access). No lock: a state
        is only ever added to ``_devices`` (under the lock), and one dict read is atomic."""
        return self._devices.get(device_id)

    def device(self, device_id: str) -> DeviceState | None:
        """The RAM state of ``device_id``, loaded on first contact (None when not registered)."""
        st = self.known(device_id)
        if st is not None:
            return st
        now = time.monotonic()
        with self._lock:
            st = self._devices.get(device_id)
            if st is not None:
                return st
            t = self._unknown.get(device_id)
            if t is not None and now - t < UNKNOWN_TTL_S:
                return None
        try:
            if not self._exists(device_id):
                self._remember_unknown(device_id, now)
                return None
            row = self.writer.call(lambda db: self._load(db, device_id)).result(30)
        except Exception as e:  # noqa: BLE001 - re-raised unless the database is unreachable
            row = self._offline_row(device_id, e)
        with self._lock:
            if row is None:
                return None
            st = self._devices.get(device_id)
            if st is None:
                st = DeviceState(
                    device_id=device_id, kind=row["kind"], key=row["key"],
                    mac=HostMac(row["key"]),
                    window=ReplayWindow(row["highest"], row["resend_floor"], self.cache_size),
                    down_boot=row["down_boot"], cfg_version=row["cfg_version"],
                    cfg_acked=row["cfg_acked"], key_checked=time.monotonic(),
                    seq_base=row["seq_base"])
                self._devices[device_id] = st
                self._unknown.pop(device_id, None)
            return st

    def _load(self, db: Any, device_id: str) -> dict[str, Any] | None:
        """``load_device`` on the writer; kept in a chain daemon's offline snapshot."""
        row = store.load_device(db, device_id)
        outage = getattr(self.writer, "outage", None)
        if row is not None and outage is not None:
            outage.remember_reader(device_id, row)
        return row

    def _offline_row(self, device_id: str, e: Exception) -> dict[str, Any]:
        """The database is unreachable: the reader as the offline snapshot has it (a chain
        daemon started during an outage); ``e`` again for any other failure."""
        outage = getattr(self.writer, "outage", None)
        if outage is None or not is_unavailable(e):
            raise e
        row = self.writer.call(lambda db: outage.offline_reader(device_id)).result(30)
        if row is None:
            raise StoreUnavailable(
                f"the chain's database is unreachable and reader {device_id} is not in this "
                "daemon's offline snapshot (it never connected here while the database "
                "answered): its taps are refused until the database answers") from None
        log.warning("device=%s loaded from the offline snapshot: the chain's database is "
                    "unreachable", device_id)
        return row

    def _exists(self, device_id: str) -> bool:
        return self._reader.run(lambda db: store.device_exists(db, device_id))

    def _remember_unknown(self, device_id: str, now: float) -> None:
        with self._lock:
            self._unknown[device_id] = now
            self._unknown.move_to_end(device_id)
            while self._unknown:
                oldest, t = next(iter(self._unknown.items()))
                if len(self._unknown) <= UNKNOWN_MAX and now - t < UNKNOWN_TTL_S:
                    break
                del self._unknown[oldest]

    def unknown_count(self) -> int:
        """How many unregistered ids are remembered right now."""
        with self._lock:
            return len(self._unknown)

    def devices(self) -> list[DeviceState]:
        """Every device seen since start."""
        with self._lock:
            return list(self._devices.values())

    # ----------------------------------------------------------------- authentication
    def verify(self, st: DeviceState, p: pk.Packet) -> None:
        """Check the frame's MAC with the device's key (re-read once when it changed);
        raises AuthError."""
        raw = p.raw   # pk.verify's check, with the C constant-time comparison
        if compare_digest(st.mac.tag(pk.UP, raw[:-MAC_LEN]), raw[-MAC_LEN:]):
            return
        if time.monotonic() - st.key_checked < KEY_RELOAD_S:
            raise AuthError(f"bad MAC from {p.device_id}")
        st.key_checked = time.monotonic()
        key = self._reader.run(lambda db: store.read_key(db, st.device_id))
        if key is None or key == st.key:
            raise AuthError(f"bad MAC from {p.device_id}")
        self._new_key(st)
        pk.verify(p, st.mac, pk.UP)

    def _new_key(self, st: DeviceState) -> None:
        """The store holds a new key for ``st`` (``device replace``, ``key --rotate``, a
        rebind): a new sequence epoch too, so reload the key, the replay window, the seq base
        and the down-seq boot together."""
        row = self.writer.call(lambda db: store.load_device(db, st.device_id)).result(30)
        if row is None:
            raise AuthError(f"device {st.device_id} is no longer registered")
        with st.lock, st.down_lock:
            st.key, st.mac = row["key"], HostMac(row["key"])
            st.window = ReplayWindow(row["highest"], row["resend_floor"], self.cache_size)
            st.seq_base, st.down_boot, st.down_ctr = row["seq_base"], row["down_boot"], 0
        log.info("device=%s key changed in the store: new key and sequence epoch (base %d)",
                 st.device_id, st.seq_base)

    # ----------------------------------------------------------------- down frames
    def next_down_seq(self, st: DeviceState) -> int:
        """Next host -> device seq; a new boot is persisted when the counter runs out."""
        with st.down_lock:
            st.down_ctr += 1
            if st.down_ctr > seqs.CTR_MAX:
                boot = seqs.next_boot(st.down_boot)
                self.writer.call(lambda db: store.save_down_boot(db, st.device_id, boot))
                st.down_boot, st.down_ctr = boot, 1
            return seqs.make(st.down_boot, st.down_ctr)

    def encode(self, st: DeviceState, ptype: int, fields: dict[str, Any]) -> bytes:
        """A host -> device frame of ``ptype``, MAC'd with the device's key."""
        return pk.encode(ptype, self.next_down_seq(st), st.device_id, fields, st.mac, pk.DOWN)
