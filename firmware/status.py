# Runs on the ESP32 (and the unix port in tests): what a reader reports after each WELCOME — the STATUS frame, and the outcome of an update.
#
# Imported by device.py for each WELCOME and dropped again (it keeps no heap between them).
import asyncio
import gc
import struct
import sys

from protocol import packet as P
from protocol.compat import const, ticks_diff, ticks_ms

from session import FW_VERSION

_EV_UPDATE_APPLIED = const(9)
_EV_UPDATE_ROLLBACK = const(10)
_LINK_SERIAL = const(1)  # STATUS.link
_LINK_MQTT = const(2)
_STATUS = const(0x10)    # protocol/ota.py (its tables stay off the heap: the body is built here)


def app_version(dev):
    ota = dev.ota
    return (ota.version if ota is not None and ota.version else FW_VERSION)[:32]


def mpy_version(dev):
    # The version of a firmware image an update installed (while it runs), else MicroPython's.
    if dev.ota is not None and dev.ota.firmware:
        return dev.ota.firmware[:32]
    v = sys.implementation.version
    return "%d.%d.%d" % (v[0], v[1], v[2])


def body(dev):
    # STATUS body (protocol/README.md): app str8 | mpy str8 | uptime_s u32 | heap_free u32 |
    # reset u8 | link u8 | outbox u16 | trial u8
    gc.collect()
    ota = dev.ota
    app = app_version(dev).encode()
    mpy = mpy_version(dev).encode()
    return (bytes((len(app),)) + app + bytes((len(mpy),)) + mpy + struct.pack(
        ">IIBBHB", (ticks_diff(ticks_ms(), dev.started) // 1000) & 0xFFFFFFFF, gc.mem_free(),
        dev.app.session.reset_cause & 0xFF, _LINK_MQTT if dev.cfg.link == "mqtt" else _LINK_SERIAL,
        min(dev.outbox.pending(), 0xFFFF), 1 if ota is not None and ota.trial else 0))


def welcomed(dev, first):
    ota = dev.ota
    session = dev.app.session
    if first and ota is not None:
        if ota.trial:
            done = ota.confirm() or app_version(dev)
            print("tapkiosk:", "update confirmed:", done)
            session.event(_EV_UPDATE_APPLIED, 0, done[:64])
        if ota.rollback:
            session.event(_EV_UPDATE_ROLLBACK, 0, ota.rollback[:64])
            ota.reported()
    asyncio.create_task(_send(dev.app, body(dev)))


async def _send(app, body):
    # Straight out (a lost STATUS is sent again after the next WELCOME).
    if app.session.reachable():
        await app.send_raw(P.encode_raw(_STATUS, app.next_seq(), app.cfg.device_id, body, app.mac, P.UP))
