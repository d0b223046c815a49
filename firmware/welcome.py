# Runs on the ESP32 (and the unix port in tests): a WELCOME from the host — the session goes online, the boot's first one reports the boot.
#
# Seldom run (once per (re)connect): session.py imports this module for one WELCOME and drops
# it after, so this code is not on the heap between reconnects.
from protocol.compat import const, ticks_diff, ticks_ms

import session as S

# protocol/codes.py values (tests/test_firmware_codes.py checks they match).
_EV_BOOT = const(1)
_EV_LINK_DOWN = const(7)
_EV_OUTBOX_FULL = const(5)


def on_welcome(s, f):
    # s: the Session. Only the WELCOME for the HELLO just sent counts.
    if not s.hello_seq or f["hello_seq"] != s.hello_seq:
        return
    app = s.app
    s.hello_seq = 0
    s._set_time(f["host_time"])
    p = s.params
    p["heartbeat_s"] = f["heartbeat_s"]
    p["offline_after_s"] = f["offline_after_s"]
    down_s = ticks_diff(ticks_ms(), s.down_at) // 1000
    was_online = s.online
    s.online = True
    s.hello_miss = 0
    s.welcomed += 1
    s.ping_nonce = 0
    app.uplink.new_session()
    ob = app.outbox
    if s.welcomed == 1:
        s.event(_EV_BOOT, s.reset_cause, S.FW_VERSION)
        if ob.dropped:
            s.event(_EV_OUTBOX_FULL, ob.dropped, "")
    elif not was_online:
        s.event(_EV_LINK_DOWN, down_s, "")
    print("tapkiosk:", "online, boot", app.boot, "outbox", ob.pending())
    if s.on_welcome is not None:
        s.on_welcome(s.welcomed == 1)
