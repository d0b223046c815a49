# Runs on CPython (host): the [http] section of daemon.toml — address, port, TLS — validated.
"""``[http]`` in ``daemon.toml``::

    [http]
    enabled = true             # default: the API is served
    address = "127.0.0.1"      # default: loopback only
    port = 8080                # 0 = any free port (the daemon logs the one it got)
    tls_cert = "/etc/tapkiosk/api.crt"   # optional; both or neither
    tls_key = "/etc/tapkiosk/api.key"

:func:`http_config` turns the table (or None when the section is absent) into an
:class:`HttpConfig`, or raises ``InputError`` naming the bad key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

from host.errors import InputError


@dataclass(frozen=True)
class HttpConfig:
    """Validated ``[http]`` settings."""

    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = 8080
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def tls(self) -> bool:
        """True when the API is served over HTTPS."""
        return self.tls_cert is not None


def http_config(table: dict[str, Any] | None) -> HttpConfig:
    """Validate the ``[http]`` table of ``daemon.toml`` (None: every default)."""
    table = dict(table or {})
    known = {f.name for f in fields(HttpConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise InputError(f"[http]: unknown key {unknown[0]!r} (keys: {', '.join(sorted(known))})")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InputError("[http] enabled must be true or false")
    address = table.get("address", "127.0.0.1")
    if not isinstance(address, str) or not address or any(c.isspace() for c in address):
        raise InputError(f"[http] address must be a host name or IP address, got {address!r}")
    port = table.get("port", 8080)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InputError(f"[http] port must be an integer 0-65535, got {port!r}")
    cert, key = table.get("tls_cert"), table.get("tls_key")
    if (cert is None) != (key is None):
        raise InputError("[http] tls_cert and tls_key go together: give both or neither")
    for name, value in (("tls_cert", cert), ("tls_key", key)):
        if value is not None and (not isinstance(value, str) or not os.path.isfile(value)):
            raise InputError(f"[http] {name}: no such file {value!r}")
    return HttpConfig(enabled=enabled, address=address, port=port, tls_cert=cert, tls_key=key)
