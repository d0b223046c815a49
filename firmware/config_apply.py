# Runs on the ESP32 (and the unix port in tests): a CONFIG from the host — new settings and allow-list, kept on flash, acknowledged.
#
# Seldom run: session.py imports this module for one CONFIG and drops it after.
import json

from protocol.compat import const

import config as C

_EV_CONFIG_APPLIED = const(6)  # protocol/codes.py (tests/test_firmware_codes.py checks it)
_Q_ACK = const(3)              # session.py control queue: an ACK


def apply(session, seq, f):
    app = session.app
    if not app.save:
        # This App keeps nothing (selfcheck): it must not acknowledge a CONFIG. An ACK makes
        # the host count the CONFIG applied, and it would never send it to the firmware
        # that boots next (an offline gate would keep its old allow-list).
        return
    p = session.params
    v = f["cfg_version"]
    if v < p["cfg_version"]:
        return
    if v > p["cfg_version"]:
        p["cfg_version"] = v
        p["relay_ms"] = f["relay_ms"]
        p["debounce_ms"] = f["debounce_ms"]
        p["offline_after_s"] = f["offline_after_s"]
        p["heartbeat_s"] = f["heartbeat_s"]
        if app.allow is not None and f["allow_op"]:
            app.allow.apply(f["allow_op"], f["allow"])
        _save(p)
        if session.on_config is not None:
            session.on_config(p)
        session.event(_EV_CONFIG_APPLIED, v, "")
    # Equal version: our ACK was probably lost; acknowledge again, change nothing.
    session.queue_ack(seq)


def _save(p, path=C.PARAMS_FILE):
    # params.json, read back by config.load_params() at boot.
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(json.dumps(p))
    C.replace_file(tmp, path)
