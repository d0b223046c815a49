# Runs on CPython (host): `tapkiosk fleet status|update` — what each reader runs, and over-the-air app updates.
"""Fleet commands over ``host.store.fleet``.

``fleet status`` prints one row per reader: app and MicroPython versions, uptime, free heap,
last reset cause, link, outbox backlog (from the reader's last STATUS), and its latest update.
``fleet update BUNDLE [--device ID ...] [--canary N] [--wait]`` adds a rollout that the
running daemon sends (host/site/update.py); ``--wait`` polls until every job is done and
exits 1 unless all of them are healthy.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from host.cli.args import Parents, group, whole
from host.cli.context import Ctx, Handler
from host.errors import InputError
from host.store import fleet
from host.store.devices import list_devices

#: ``fleet update --wait`` gives up after this long (seconds; --timeout).
WAIT_S = 1800


def add_parsers(sub: Any, p: Parents) -> None:
    """``fleet status|update``."""
    fl = group(sub, "fleet", "readers' versions and health; over-the-air app updates")
    fl.add_parser("status", help="one row per reader: versions, uptime, heap, link, backlog",
                  **p.read)
    u = fl.add_parser("update", help="send an app bundle (tools/flash.py bundle) to readers "
                      "through the running daemon", **p.read)
    u.add_argument("bundle", help="bundle file")
    u.add_argument("--device", action="append", default=[], metavar="ID",
                   help="reader to update (repeatable; default: every reader)")
    u.add_argument("--canary", type=whole("canary", 0, 1000), default=0,
                   help="update this many readers first; the rest once they are healthy")
    u.add_argument("--wait", action="store_true", help="wait until every reader is done")
    u.add_argument("--timeout", type=whole("timeout", 1, 86400), default=WAIT_S,
                   help="seconds --wait waits at most")


def status(ctx: Ctx, a: argparse.Namespace) -> None:
    rows = fleet.status_rows(ctx.db)
    if ctx.as_json:
        ctx.show(rows)
        return
    out = [{"device": r["device_id"], "online": "yes" if r["online"] else "no",
            "app": r["app"] or "-", "micropython": r["mpy"] or "-",
            "uptime": _duration(r["uptime_s"]), "heap_free": _kib(r["heap_free"]),
            "reset": "-" if r["reset"] is None else r["reset"], "link": r["link"] or "-",
            "outbox": "-" if r["outbox"] is None else r["outbox"],
            "trial": "yes" if r["trial"] else "", "update": r["update_state"] or ""}
           for r in rows]
    ctx.show(out)


def _duration(s: int | None) -> str:
    if s is None:
        return "-"
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    return f"{d}d{h:02d}h{s // 60:02d}m" if d else f"{h}h{s // 60:02d}m"


def _kib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f}K"


def update(ctx: Ctx, a: argparse.Namespace) -> int:
    try:
        blob = Path(a.bundle).read_bytes()
    except OSError as e:
        raise InputError(f"cannot read bundle {a.bundle}: {e.strerror}") from None
    devices = a.device or [d["device_id"] for d in list_devices(ctx.db)]
    r = fleet.add_rollout(ctx.db, blob, devices, a.canary, ctx.ts())
    if not a.wait:
        _show_rollout(ctx, r, fleet.rollout_rows(ctx.db, r["rollout"]))
        return 0
    deadline = time.monotonic() + a.timeout
    while True:
        rows = fleet.rollout_rows(ctx.db, r["rollout"])
        if all(j["state"] in fleet.DONE for j in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    _show_rollout(ctx, r, rows)
    return 0 if all(j["state"] == "healthy" for j in rows) else 1


def _show_rollout(ctx: Ctx, r: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    if ctx.as_json:
        ctx.show({**r, "jobs": rows})
    else:
        ctx.show([{"device": j["device_id"], "version": j["version"], "wave": j["wave"],
                   "state": j["state"], "chunks": f"{j['have']}/{j['chunks']}",
                   "detail": j["detail"]} for j in rows])


COMMANDS: dict[str, Handler] = {"fleet status": status, "fleet update": update}
