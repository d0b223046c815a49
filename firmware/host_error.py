# Runs on the ESP32 (and the unix port in tests): what an ERROR frame from the host does — to our HELLO, or to the outbox frame it names.
#
# Fault handling only: app.py imports this module for one ERROR and drops it after (its code
# and texts stay off the heap of a reader that only taps).
from protocol.compat import const

_HELLO_MAX_MS = const(3000)  # session.py: a refused HELLO is retried at the slowest pace
_REFUSED_MAX = const(3)    # ERROR `replay` answers (each after a resync) before a frame is final
# protocol/codes.py error codes (tests/test_firmware_codes.py checks them).
_ERR_MALFORMED = const(1)
_ERR_UNKNOWN_DEVICE = const(3)
_ERR_REPLAY = const(4)
_ERR_UNSUPPORTED = const(5)

# ERROR codes that settle a frame: the host will never apply these bytes. `bad_mac` is not one:
# our stored bytes carry a good MAC (the slot's CRC checks them), so that answer is about
# something else (a forged frame under our seq, a host mid key change); the frame stays.
_FINAL = (_ERR_MALFORMED, _ERR_UNKNOWN_DEVICE, _ERR_UNSUPPORTED)


def on_error(app, f):
    app.errors += 1
    if not _on_hello(app.session, f):
        _on_frame(app.uplink, f)


def _on_hello(session, f):
    # True if the ERROR refused our HELLO (unknown device, bad key): retry slowly.
    if not session.hello_seq or f["ref_seq"] != session.hello_seq:
        return False
    print("tapkiosk:", "host refused HELLO: error", f["code"], f["text"])
    session.hello_wait = _HELLO_MAX_MS
    return True


def _on_frame(uplink, f):
    # What an ERROR does to the frame it names:
    # - nothing unless that frame was sent in this session and is still waiting for its
    #   answer (in flight);
    # - final (malformed, unknown_device, unsupported): the host will never apply these
    #   bytes, and they are all we have: the slot is cleared (logged);
    # - replay: the frame was overtaken by a newer seq (or came after a HELLO that did not
    #   cover it). It stays: a fresh HELLO (resend_floor = lowest pending seq) goes at once
    #   and the frame is resent, as a late outbox delivery. Refused again _REFUSED_MAX
    #   times (the host holds different bytes under this seq): final;
    # - bad_mac, internal or a code we do not know: it stays and goes again with the next
    #   resync.
    ref = f["ref_seq"]
    code = f["code"]
    print("tapkiosk:", "host error", code, "for seq", ref, f["text"])
    ob = uplink.outbox
    i = ob.find(ref)
    if i < 0 or not ob.in_flight(i):
        return
    if code == _ERR_REPLAY:
        if ob.refuse(i) <= _REFUSED_MAX:
            ob.mark_unsent(i)
            uplink.resync = True
            uplink.kick.set()
            print("tapkiosk:", "outbox frame", ref, "overtaken; resent after resync")
            return
    elif code not in _FINAL:
        return
    ob.done_slot(i)
    uplink.given_up += 1
    uplink.kick.set()
    print("tapkiosk:", "outbox frame", ref, "given up after host error", code)
