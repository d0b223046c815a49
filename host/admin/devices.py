# Runs on CPython (host): operator writes to readers — settings, key rotation, a config push on record.
"""Device writes, shared by the CLI (``tapkiosk device key --rotate``) and the console's device
page. Each is one idempotent, audited ``write`` (``host.admin.core``): the audit row names the
device and holds its kind and settings before and after, never a key.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from host.admin.core import AdminCore
from host.store import site_state
from host.store.devices import check_device_id, get_device, rotate_key, update_settings


class DeviceWrites(AdminCore):
    """``set_device``, ``rotate_device_key``, ``record_config_push``."""

    def set_device(self, device_id: str, settings: dict[str, Any], *,
                   key: str | None = None) -> dict[str, Any]:
        """Change settings of a registered device (typed values: ``parse_settings`` turns an
        operator's text into them); InputError naming a bad setting, nothing changed."""
        check_device_id(device_id)

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            _, after = update_settings(conn, device_id, settings)
            return {"device_id": device_id, "settings": after}

        return self.write("device.set", {"device_id": device_id, "settings": settings}, key, fn)

    def rotate_device_key(self, device_id: str, *, key: str | None = None) -> dict[str, Any]:
        """A fresh key and sequence epoch for ``device_id``. The first answer carries the new
        key as ``new_key`` (hex) for the technician to provision the board with; it is never
        stored with the idempotency record nor in the audit row, so a replay has none."""
        check_device_id(device_id)
        fresh: list[bytes] = []

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            fresh.append(rotate_key(conn, device_id))
            return {"device_id": device_id, "rotated": True}

        out = self.write("device.key.rotate", {"device_id": device_id}, key, fn)
        if fresh and not out["replayed"]:
            out["new_key"] = fresh[0].hex()
        return out

    def record_config_push(self, device_id: str, *, key: str | None = None) -> dict[str, Any]:
        """Record (once per key, audited) that the device's config and, for a gate, its
        allow-list are being pushed; the daemon sends the frames. NotFound for an unknown
        device."""
        check_device_id(device_id)

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            kind = get_device(self.db, device_id)["kind"]
            cards = len(site_state.gate_allow_list(self.db, ts)) if kind == "gate" else 0
            return {"device_id": device_id, "kind": kind, "cards": cards}

        return self.write("device.config.push", {"device_id": device_id}, key, fn)
