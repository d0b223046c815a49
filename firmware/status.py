# Runs on the ESP32 (and the unix port in tests): what a reader reports after each WELCOME — the STATUS frame, and the outcome of an update.
#
# Imported by device.py at the first WELCOME (not at boot).
import gc
import sys

from protocol import packet as P
from protocol.compat import const, ticks_diff, ticks_ms

from session import FW_VERSION

_EV_UPDATE_APPLIED = const(8)
_EV_UPDATE_ROLLBACK = const(9)


def app_version(dev):
    ota = dev.ota
    return (ota.version if ota is not None and ota.version else FW_VERSION)[:32]


def mpy_version():
    v = sys.implementation.version
    return "%d.%d.%d" % (v[0], v[1], v[2])


def fields(dev):
    gc.collect()
    ota = dev.ota
    return {
        "app": app_version(dev), "mpy": mpy_version(),
        "uptime_s": (ticks_diff(ticks_ms(), dev.started) // 1000) & 0xFFFFFFFF,
        "heap_free": gc.mem_free(), "reset": dev.app.session.reset_cause & 0xFF,
        "link": P.LINK_MQTT if dev.cfg.link == "mqtt" else P.LINK_SERIAL,
        "outbox": dev.outbox.pending(), "trial": 1 if ota is not None and ota.trial else 0,
    }


def welcomed(dev, first):
    ota = dev.ota
    session = dev.app.session
    if first and ota is not None:
        if ota.trial:
            ota.confirm()
            print("tapkiosk:", "update confirmed:", app_version(dev))
            session.event(_EV_UPDATE_APPLIED, 0, app_version(dev))
        if ota.rollback:
            session.event(_EV_UPDATE_ROLLBACK, 0, ota.rollback[:64])
            ota.reported()
    session.frame(P.STATUS, fields(dev))
