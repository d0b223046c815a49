# Runs on CPython (host): device config — computed per device, pushed as CONFIG frames, acked.
"""Device config: relay, debounce, heartbeat, offline-after and, for a gate, the offline
allow-list (24 UIDs a frame: one replace, then adds, one ``cfg_version`` each).

``sync(db, st, now)`` (on the writer) computes a device's config and bumps its version when
it changed; ``push(st, cfg, send)`` sends the frames; ``acked(st, ...)`` records an ACK or an
EVENT ``config_applied``. A gate's allow-list changes while the gate stays connected (a card
blocked or enrolled, a pass sold or expired): ``check()`` reads it on the read-only
connection and, only when it changed, recomputes each connected gate's config on the writer
and pushes it through the link the gate last spoke on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from host.errors import Conflict, NotFound
from host.rules.policy import Policy
from host.site.registry import DeviceState, Registry
from host.site.writer import Writer, WriterClosed
from host.store import site_state as store
from host.store.db import transaction
from protocol import control
from protocol import packet as pk

log = logging.getLogger("tapkiosk.service")

Send = Callable[[bytes], None]

_ALLOW_PER_FRAME = 24
_PENDING_MAX = 64


@dataclass
class ServiceConfig:
    """Timing and feedback values the daemon announces to devices."""

    heartbeat_s: int = 30
    offline_after_s: int = 90
    debounce_ms: int = 1500
    cache_size: int = 32
    config_check_s: float = 5.0


@dataclass
class DeviceConfig:
    """A device's config version, the version it acknowledged, and the CONFIG frames."""

    version: int
    acked: int
    frames: list[dict[str, Any]]


class DeviceConfigs:
    """See the module doc."""

    def __init__(self, writer: Writer, registry: Registry, reader: store.Reader,
                 policy: Policy, config: ServiceConfig, clock: Callable[[], float]) -> None:
        self.writer = writer
        self.registry = registry
        self.reader = reader
        self.policy = policy
        self.config = config
        self.clock = clock
        self._allow_seen: bytes | None = None

    def sync(self, db: sqlite_utils.Database, device_id: str, kind: str, now: int,
             allow: list[bytes] | None = None, force: bool = False) -> DeviceConfig:
        """Compute the device's config; bump its version when it changed (or ``force``: the
        device then applies it again, even unchanged). On the writer. ``allow``: the gate
        allow-list when the caller already read it in this transaction."""
        if kind != "gate":
            allow = []
        elif allow is None:
            allow = store.gate_allow_list(db, now)
        relay = {"gate": self.policy.gate_relay_ms, "wash": self.policy.wash_relay_ms,
                 "kiosk": self.policy.kiosk_relay_ms}.get(kind, 0)
        c = self.config
        base = {"relay_ms": max(0, min(60000, relay)), "debounce_ms": c.debounce_ms,
                "offline_after_s": c.offline_after_s, "heartbeat_s": c.heartbeat_s}
        digest = hashlib.sha256(json.dumps({**base, "allow": [u.hex() for u in allow]},
                                           sort_keys=True).encode()).hexdigest()
        chunks = [allow[i:i + _ALLOW_PER_FRAME]
                  for i in range(0, len(allow), _ALLOW_PER_FRAME)] or [[]]
        row = store.config_row(db, device_id)
        if force or row is None or row[1] != digest:
            version = (row[0] if row else 0) + len(chunks)
            acked = row[2] if row else 0
            store.save_config(db, device_id, version, digest, acked)
        else:
            version, acked = row[0], row[2]
        first = version - len(chunks) + 1
        frames = [{**base, "cfg_version": first + i,
                   "allow_op": control.ALLOW_REPLACE if i == 0 else control.ALLOW_ADD, "allow": chunk}
                  for i, chunk in enumerate(chunks)]
        return DeviceConfig(version, acked, frames)

    def push(self, st: DeviceState, cfg: DeviceConfig, send: Send) -> None:
        """Send the CONFIG frames of ``cfg`` (allow-list replace, then adds)."""
        for fields in cfg.frames:
            raw = self.registry.encode(st, pk.CONFIG, fields)
            with st.lock:
                st.cfg_pending[int.from_bytes(raw[2:6], "big")] = fields["cfg_version"]
                while len(st.cfg_pending) > _PENDING_MAX:
                    st.cfg_pending.pop(next(iter(st.cfg_pending)))
            send(raw)

    def push_now(self, device_id: str) -> dict[str, Any]:
        """Send a connected device its whole config again under a new version (a gate: its
        allow-list as of now, replace then adds), whether or not it changed: a technician's
        push from the console. NotFound for an unknown device; Conflict when it is offline
        (it gets its config at its next HELLO anyway)."""
        st = self.registry.device(device_id)
        if st is None:
            raise NotFound(f"unknown device {device_id!r}")
        send = st.send
        if not st.online or send is None:
            raise Conflict(f"device {device_id} is offline: it gets its config and allow-list "
                           "when it next connects")
        now = int(self.clock())

        def sync_one(db: sqlite_utils.Database) -> DeviceConfig:
            with transaction(db):
                return self.sync(db, device_id, st.kind, now, force=True)

        cfg = self.writer.call(sync_one).result(30)
        st.cfg_version = max(st.cfg_version, cfg.version)
        cards = sum(len(f["allow"]) for f in cfg.frames)
        log.info("device=%s config %d pushed by hand (%d cards)", device_id, cfg.version, cards)
        self.push(st, cfg, send)
        return {"device_id": device_id, "cfg_version": cfg.version, "frames": len(cfg.frames),
                "cards": cards}

    def acked(self, st: DeviceState, ref_seq: int | None, version: int | None) -> None:
        """The device acknowledged the CONFIG sent as ``ref_seq`` (an ACK) or applied
        ``version`` (an EVENT config_applied)."""
        if version is None:
            with st.lock:
                version = st.cfg_pending.pop(ref_seq, None)
            if version is None:
                return
        if version <= st.cfg_acked:
            return
        st.cfg_acked = version
        dev = st.device_id
        self.writer.call(lambda db: store.ack_config(db, dev, version))
        log.info("device=%s config %d acknowledged", dev, version)

    def check(self) -> int:
        """Push a new CONFIG to every connected gate whose allow-list changed; returns how
        many gates got one. The change check is one read on the read-only connection; the
        writer is involved only when the allow-list differs from the last one seen."""
        gates = [st for st in self.registry.devices()
                 if st.kind == "gate" and st.online and st.send is not None]
        if not gates:
            return 0
        now = int(self.clock())
        allow = self.reader.run(lambda db: store.gate_allow_list(db, now))
        seen = hashlib.sha256(b"".join(allow)).digest()
        if seen == self._allow_seen:
            return 0
        ids = [(st.device_id, st.kind) for st in gates]

        def sync_all(db: sqlite_utils.Database) -> dict[str, DeviceConfig]:
            fresh = store.gate_allow_list(db, now)     # on the writer: the list as of now
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                out = {dev: self.sync(db, dev, kind, now, allow=fresh) for dev, kind in ids}
                db.conn.execute("COMMIT")
            except BaseException:
                db.conn.execute("ROLLBACK")
                raise
            return out

        try:
            cfgs = self.writer.call(sync_all).result(30)
        except WriterClosed:
            return 0
        self._allow_seen = seen
        return sum(self._push_changed(st, cfgs.get(st.device_id)) for st in gates)

    def _push_changed(self, st: DeviceState, cfg: DeviceConfig | None) -> int:
        send = st.send
        if cfg is None or send is None or cfg.version <= st.cfg_version:
            return 0
        st.cfg_version = cfg.version
        log.info("device=%s allow-list changed: pushing config %d (%d cards)",
                 st.device_id, cfg.version, sum(len(f["allow"]) for f in cfg.frames))
        try:
            self.push(st, cfg, send)
        except Exception as e:  # noqa: BLE001 - the gate gets it at its next HELLO
            log.warning("device=%s cannot push config: %s", st.device_id, e)
            return 0
        return 1
