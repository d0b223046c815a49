# Runs on CPython (host): `tapkiosk init`, `site key` and `device ...` — the site's database, keys and readers.
"""Site and device commands."""

from __future__ import annotations

import argparse
import os
from typing import Any

from host.cli.args import Parents, group, whole
from host.cli.context import Ctx, Handler
from host.cli.privacy import init_data_key
from host.errors import InputError, NotFound
from host.secure import check as secure_policy
from host.store import audit, stores
from host.store.db import schema_version
from host.site.broker_acl import write_acl
from host.store.devices import (KINDS, device_key, get_device, list_devices, parse_settings,
                                register_device, replace_device)

_LIST_COLUMNS = ("device_id", "kind", "name", "store", "board_mac", "online", "last_seen",
                 "last_seq", "fw")


def add_site_parsers(sub: Any, p: Parents) -> None:
    """``init`` and ``site key``."""
    i = sub.add_parser("init", help="create the database (an existing one: upgraded like "
                       "'tapkiosk upgrade', backed up first)", **p.read)
    i.add_argument("--backup-dir", help="where a dated backup goes before an upgrade "
                   "(default: the database's folder)")
    site = group(sub, "site", "site settings")
    s = site.add_parser("key", help="show (or --rotate) the site key for secure cards; "
                        "the key itself is never printed", **p.read)
    s.add_argument("--rotate", action="store_true", help="add a new key version")


def add_parsers(sub: Any, p: Parents) -> None:
    """``device add|list|key`` and ``broker-acl``."""
    acl = sub.add_parser("broker-acl", help="write the mosquitto ACL file: each registered "
                         "reader only its own topics", **p.read)
    acl.add_argument("file")
    device = group(sub, "device", "devices")
    d = device.add_parser("add", **p.read)
    d.add_argument("device_id")
    d.add_argument("kind", choices=KINDS)
    d.add_argument("--name")
    d.add_argument("--direction", choices=("in", "out", "both"))
    d.add_argument("--anti-passback", choices=("on", "off"))
    d.add_argument("--fixed-price", choices=("on", "off"),
                   help="kiosk: on (default) charges the reader's own amount when no sale is "
                        "armed; off refuses such a tap (no_sale): a kiosk that sells through "
                        "the HTTP API")
    d.add_argument("--duplicate-window", type=whole("duplicate window", 0, 3600))
    d.add_argument("--hours", help="opening hours HH:MM-HH:MM")
    d.add_argument("--key", help="64 hex digits (default: a fresh random key)")
    d.add_argument("--broker-acl", metavar="FILE",
                   help="rewrite this mosquitto ACL file with the new reader's topics")
    d.add_argument("--store", help="the chain store the reader is in (tapkiosk store add)")
    device.add_parser("list", **p.read)
    d = device.add_parser("set", help="move a reader to another store of the chain", **p.read)
    d.add_argument("device_id")
    g = d.add_mutually_exclusive_group(required=True)
    g.add_argument("--store", help="a store name (tapkiosk store list)")
    g.add_argument("--no-store", action="store_true", help="the site's only store")
    d = device.add_parser("key", help="rotate (--rotate) the device's 32-byte key; the key is "
                          "printed only with --show (for a hand-made config)", **p.read)
    d.add_argument("device_id")
    d.add_argument("--rotate", action="store_true", help="a new key and sequence epoch")
    d.add_argument("--show", action="store_true", help="print the key (keep it secret)")
    d = device.add_parser("replace", help="a replacement or wiped board for this id: new key "
                          "and sequence epoch, unbound; then provision the new board",
                          **p.read)
    d.add_argument("device_id")


def init(ctx: Ctx, a: argparse.Namespace) -> None:
    sk = secure_policy.ensure_site_key(ctx.db, ctx.ts())
    view = {"db": ctx.path, "schema_version": schema_version(ctx.db),
            "site_key_version": sk["version"], **init_data_key(ctx)}
    if getattr(a, "backup", None):
        view["backup"] = a.backup
    ctx.show(view)


def site_key(ctx: Ctx, a: argparse.Namespace) -> None:
    info = (secure_policy.rotate_site_key(ctx.db, ctx.ts()) if a.rotate
            else secure_policy.ensure_site_key(ctx.db, ctx.ts()))
    if not ctx.as_json:
        info["versions"] = " ".join(map(str, info["versions"]))
    ctx.show(info)


def _device_view(dev: dict[str, Any]) -> dict[str, Any]:
    """A device for display: its settings once, under ``settings`` (``get_device`` also
    flattens them to the top level for the engine's convenience)."""
    return {k: v for k, v in dev.items() if k == "settings" or k not in dev["settings"]}


def _settings(a: argparse.Namespace) -> dict[str, Any]:
    return parse_settings(a.kind, {
        "name": a.name, "direction": a.direction, "duplicate_window_s": a.duplicate_window,
        "hours": a.hours, "anti_passback": a.anti_passback, "fixed_price": a.fixed_price})


def device_add(ctx: Ctx, a: argparse.Namespace) -> None:
    key = None
    if a.key is not None:
        try:
            key = bytes.fromhex(a.key)
        except ValueError:
            raise InputError("--key must be 64 hex digits") from None
    settings = _settings(a)
    if a.broker_acl:
        _check_writable(a.broker_acl)   # refused before anything is registered
    if a.store is not None:
        stores.store_id(ctx.db, a.store)   # an unknown store is refused before anything
    if _registered(ctx, a.device_id):
        register_device(ctx.db, a.device_id, a.kind, key=key)  # same kind and key, or Conflict
        if settings:
            ctx.admin.set_device(a.device_id, settings)  # the console's write, audited
    else:
        register_device(ctx.db, a.device_id, a.kind, key=key, **settings)
    if a.store is not None:
        stores.set_device_store(ctx.db, a.device_id, a.store, actor=audit.cli_actor())
    view = _device_view(get_device(ctx.db, a.device_id))
    if a.broker_acl:
        view["broker_acl"] = _acl_line(a.broker_acl, write_acl(ctx.db, a.broker_acl))
    ctx.show(view)


def _registered(ctx: Ctx, device_id: str) -> bool:
    try:
        get_device(ctx.db, device_id)
    except NotFound:
        return False
    return True


def _check_writable(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise InputError(f"cannot write the broker ACL {path}: {folder} is not a writable folder")


def _acl_line(path: str, ids: list[str]) -> str:
    return f"wrote {path}: {len(ids)} device(s); reload mosquitto (systemctl reload mosquitto)"


def broker_acl(ctx: Ctx, a: argparse.Namespace) -> None:
    ids = write_acl(ctx.db, a.file)
    ctx.show({"file": a.file, "devices": ids} if ctx.as_json else _acl_line(a.file, ids))


def device_list(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show([{k: d[k] for k in _LIST_COLUMNS} for d in list_devices(ctx.db)])


def device_set(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(stores.set_device_store(ctx.db, a.device_id, None if a.no_store else a.store,
                                     actor=audit.cli_actor()))


def device_key_cmd(ctx: Ctx, a: argparse.Namespace) -> None:
    get_device(ctx.db, a.device_id)     # an unknown device: NotFound before anything else
    if not (a.rotate or a.show):
        raise InputError("keys are not printed: add --show to print it, or --rotate for a "
                         "new one (tools/flash.py writes the key to the board itself)")
    if a.rotate:
        k = bytes.fromhex(ctx.admin.rotate_device_key(a.device_id)["new_key"])
    else:
        k = device_key(ctx.db, a.device_id)
    view: dict[str, Any] = {"device_id": a.device_id, "rotated": a.rotate}
    if a.show:
        view["key"] = k.hex()
    ctx.show(view)


def device_replace(ctx: Ctx, a: argparse.Namespace) -> None:
    """A new board for ``device_id``: new key and sequence epoch (``replace_device``)."""
    replace_device(ctx.db, a.device_id)
    ctx.show({"device_id": a.device_id, "key": "new (not printed)", "board": "unbound",
              "next": f"tools/flash.py provision the new board as {a.device_id}; "
                      "a running daemon picks the new key up at the board's first frame"})


COMMANDS: dict[str, Handler] = {
    "init": init, "site key": site_key, "device add": device_add, "device list": device_list,
    "device key": device_key_cmd, "device replace": device_replace, "device set": device_set,
    "broker-acl": broker_acl,
}
