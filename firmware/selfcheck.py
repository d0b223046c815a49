# Runs on the ESP32 (and the unix port in tests): technician self-check; tools/flash.py calls run() over the REPL.
#
# run() prints one JSON line and returns the same dict:
#   {"reader": {"ok": bool, "version": "PN532 v1.6", "tries": n | "error": ...},
#    "link":   {"ok": bool, "detail": "serial uart 2" | "mqtt host:port" | "error": ...},
#    "hello":  {"ok": bool, "detail": "boot N" | "error": ...},
#    "tap":    {"ok": bool | None, "detail": "granted: ..." | "error": "refused: bad_service ..."}}
# It uses the board's real config.json, reader and link; it sends a HELLO (with a new boot
# number, as a boot does) and waits for the WELCOME. With test_uid (a staff test card's UID,
# hex) it then sends one real TAP with this reader's service, amount and direction: the host
# decides it like any tap (a refusal such as bad_service or invalid_amount is a FAIL), and a
# VOID for it follows at once, so the host reverses it and the card is not charged. Without
# test_uid the tap check is skipped (ok None). Nothing is switched: no relay, no LED.
import asyncio
import binascii
import json

from protocol.compat import const, ticks_diff, ticks_ms

_VOIDED = const(20)  # protocol.codes reason "voided"
_READER_TRIES = const(3)  # as the reader task: max_failures (3) errors in a row make a fault


async def _begin(chip, tries):
    # begin() until it succeeds, at most ``tries`` times: one missed deadline (an ACK later
    # than 30 ms) is not a broken reader, for the self-check as for the reader task. Returns
    # (version, tries used); the last error is raised.
    n = 0
    while True:
        n += 1
        try:
            return await chip.begin(), n
        except Exception:  # noqa: BLE001 - retried; the last one is the answer
            if n >= tries:
                raise


async def _reader(cfg):
    import device
    chip = device.build_chip(cfg)
    try:
        v, n = await asyncio.wait_for_ms(_begin(chip, _READER_TRIES), 3000)
    except asyncio.TimeoutError:
        return {"ok": False, "error": "no answer from the PN532"}
    except Exception as e:  # noqa: BLE001 - any failure is the answer
        return {"ok": False, "error": "%s: %s (%d tries)" % (type(e).__name__, e, _READER_TRIES)}
    if isinstance(v, (tuple, list)) and len(v) >= 3:
        v = "PN532 v%d.%d" % (v[1], v[2])
    return {"ok": True, "version": str(v), "tries": n}


async def _decision(seen, tap_seq, want_void, wait_ms):
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < wait_ms:
        for f in seen:
            if f["tap_seq"] == tap_seq and (f["reason"] == _VOIDED) == want_void:
                return f
        await asyncio.sleep_ms(20)
    return None


async def _test_tap(app, test_uid, wait_ms):
    from protocol import codes
    try:
        uid = binascii.unhexlify(test_uid)
    except ValueError:
        return {"ok": False, "error": "test card UID %r is not hex" % (test_uid,)}
    seen = []
    on_decision = app.uplink.on_decision

    def spy(f):
        seen.append(f)
        on_decision(f)

    app.uplink.on_decision = spy
    await app.tap_path.tap(uid, 0x08)
    d = seen[-1] if seen else None
    if d is None or d["reason"] == _VOIDED:
        return {"ok": False, "error": "no DECISION for the test tap within %d ms" % app.cfg.decision_ms}
    tap_seq = d["tap_seq"]
    vseq = app.next_seq()
    # A copy: the tap path's buffer may build the next TAP while this VOID is being sent.
    await app.send_raw(bytes(app.tap_path.tw.void(vseq, tap_seq)))
    voided = await _decision(seen, tap_seq, True, wait_ms)
    reason = codes.reason_name(d["reason"])
    what = "%s (%s, %s)" % (reason, d["text"], "voided: not charged" if voided else
                            "VOID not confirmed: check the card's balance")
    if d["verdict"] != codes.GRANT:
        return {"ok": False, "error": "refused: " + what}
    if voided is None:
        return {"ok": False, "error": "granted but " + what}
    return {"ok": True, "detail": "granted: " + what}


async def _link_and_hello(cfg, wait_ms, test_uid=None):
    import device
    import config as C
    from app import App
    from outbox import Outbox

    class _NoFeedback:
        def show(self, *a):
            pass

    try:
        link = device.build_link(cfg)
    except Exception as e:  # noqa: BLE001
        err = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        return err, {"ok": None, "error": "no link"}, {"ok": None, "error": "no link"}
    detail = ("serial uart %d" % cfg.serial["uart"]) if cfg.link == "serial" else \
        ("mqtt %s:%d" % (cfg.mqtt["broker"], cfg.mqtt["port"]))
    boot = C.next_boot(key=cfg.key)
    if not boot:
        return {"ok": True, "detail": detail}, {"ok": False, "error": "boot counter used up: re-key the device"}
    ob = Outbox("outbox.bin", cfg.outbox_slots)
    app = App(cfg, link, _NoFeedback(), ob, boot, C.load_params(), None, 0, False)
    tasks = [asyncio.create_task(link.run()), asyncio.create_task(app.session.run()),
             asyncio.create_task(app.uplink.run())]
    t0 = ticks_ms()
    while not app.session.online and ticks_diff(ticks_ms(), t0) < wait_ms:
        await asyncio.sleep_ms(50)
    connected = link.connected
    tap = {"ok": None, "detail": "no test card given: tap a member card to check"}
    if test_uid and app.session.online:
        tap = await _test_tap(app, test_uid, wait_ms)
    elif test_uid:
        tap = {"ok": False, "error": "not sent: the host did not answer the HELLO"}
    for t in tasks:
        t.cancel()
    ob.close()
    link_r = {"ok": bool(connected), "detail": detail}
    if not connected:
        err = getattr(getattr(link, "client", None), "last_error", None)
        link_r["error"] = "not connected: %r" % (err,)
    if app.session.online:
        hello = {"ok": True, "detail": "welcomed, boot %d" % boot}
    else:
        hello = {"ok": False, "error": "no WELCOME within %d s (errors from host: %d)" % (wait_ms // 1000, app.errors)}
        if cfg.link == "serial" and app.bad_frames == 0 and app.session.last_rx == app.session.down_at:
            hello["error"] += "; nothing received on the serial line"
    return link_r, hello, tap


def run(wait_ms=6000, test_uid=None):
    import config as C
    try:
        cfg = C.load()
    except C.ConfigError as e:
        r = {"config": {"ok": False, "error": str(e)}}
        print(json.dumps(r))
        return r

    async def go():
        reader = await _reader(cfg)
        link, hello, tap = await _link_and_hello(cfg, wait_ms, test_uid)
        return {"reader": reader, "link": link, "hello": hello, "tap": tap}

    r = asyncio.run(go())
    print(json.dumps(r))
    return r


if __name__ == "__main__":
    run()
