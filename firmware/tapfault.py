# Runs on the ESP32 (and the unix port in tests): the tap path when the host does not answer (give up: VOID) or cannot be reached (offline mode).
#
# Fault handling only: tappath.py (and uplink.py, for the answer to a VOID) imports this module
# for one such tap and drops it after (a reader whose host answers never keeps this code on its
# heap).
from protocol import packet as P
from protocol.compat import const

_PAT_FAULT = const(5)
_PAT_OFFLINE_DENY = const(4)
_PAT_OFFLINE_GRANT = const(3)
_EV_OUTBOX_FULL = const(5)
_VOIDED = const(20)  # protocol.codes reason "voided"


def offline(tp, uid, sak, secure):
    # The host is unreachable. Returns the pattern shown.
    app = tp.app
    cfg = tp.cfg
    params = app.params
    allow = app.allow
    if cfg.kind == "gate" and allow is not None \
            and app.session.offline_ms() >= params["offline_after_s"] * 1000:
        if uid in allow:
            seq = app.next_seq()
            frame = tp.tw.tap(seq, uid, sak, P.FLAG_OFFLINE, cfg.direction, cfg.service, 0,
                              app.session.device_time(), secure)
            tp.store(seq, frame)
            tp.fb.show(_PAT_OFFLINE_GRANT, params["relay_ms"], "Welcome (offline)")
            return _PAT_OFFLINE_GRANT
        tp.fb.show(_PAT_OFFLINE_DENY, 0, "Offline - not on the list")
        return _PAT_OFFLINE_DENY
    # Wash and kiosk never spend stored value offline; a gate waits offline_after_s first.
    tp.fb.show(_PAT_OFFLINE_DENY, 0, "Offline - please try later")
    return _PAT_OFFLINE_DENY


def no_answer(tp, seq):
    # Nothing starts; the TAP becomes a VOID so the host never charges it. Nothing is sent
    # from here: this is the reader's task, and a send can wait seconds for the link (MQTT
    # in-flight slots full) while the next card goes unread. give_up() kicked the uplink's
    # task, which sends the VOID, then the PING queued below (control frames go after outbox
    # frames: the VOID is sent before the PING takes a higher seq).
    app = tp.app
    give_up(tp, seq)
    tp.fb.show(_PAT_FAULT, 0, "No answer - please tap again")
    if app.session.reachable():
        app.session.queue_ping()
    return _PAT_FAULT


def give_up(tp, tap_seq):
    # Synchronous (no await): a DECISION cannot slip in between the check and the rewrite.
    app = tp.app
    ob = app.outbox
    i = ob.find_tap(tap_seq)
    if i < 0 or ob.is_void(i):
        return -1
    vseq = app.next_seq()
    ob.replace_void(i, vseq, tp.tw.void(vseq, tap_seq))
    tp.voids += 1
    print("tapkiosk:", "no answer for tap", tap_seq, "- voided as", vseq)
    app.uplink.kick.set()
    return i


def dropped(tp, lost):
    # The outbox was full: the tap `lost` (its oldest pending one) was overwritten.
    ob = tp.app.outbox
    print("tapkiosk:", "outbox full: dropped tap", lost)
    tp.app.event(_EV_OUTBOX_FULL, ob.dropped, "dropped seq %d" % lost)


def void_answered(up, i, seq, f):
    # A DECISION for tap `seq`, whose pending slot i holds the VOID that gave up on it: only
    # the answer "voided" settles it.
    if f["reason"] != _VOIDED:
        # The original answer, after we gave up: start nothing, keep the VOID going.
        print("tapkiosk:", "decision for voided tap", seq, "ignored: reason", f["reason"])
        return
    up.outbox.done_slot(i)
    up.kick.set()
    print("tapkiosk:", "tap", seq, "voided by the host")
