# Runs on the ESP32 (and the unix port in tests): technician self-check; tools/flash.py calls run() over the REPL.
#
# run() prints one JSON line and returns the same dict:
#   {"reader": {"ok": bool, "version": "PN532 v1.6" | "error": ...},
#    "link":   {"ok": bool, "detail": "serial uart 2" | "mqtt host:port" | "error": ...},
#    "hello":  {"ok": bool, "detail": "boot N" | "error": ...}}
# It uses the board's real config.json, reader and link; it sends a HELLO (with a new boot
# number, as a boot does) and waits for the WELCOME, but sends no TAP.
import asyncio
import json

from protocol.compat import ticks_diff, ticks_ms


async def _reader(cfg):
    import main
    chip = main.build_chip(cfg)
    try:
        v = await asyncio.wait_for_ms(chip.begin(), 3000)
    except asyncio.TimeoutError:
        return {"ok": False, "error": "no answer from the PN532"}
    except Exception as e:  # noqa: BLE001 - any failure is the answer
        return {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
    if isinstance(v, (tuple, list)) and len(v) >= 3:
        v = "PN532 v%d.%d" % (v[1], v[2])
    return {"ok": True, "version": str(v)}


async def _link_and_hello(cfg, wait_ms):
    import main
    import config as C
    from app import App
    from outbox import Outbox

    class _NoFeedback:
        def show(self, *a):
            pass

    try:
        link = main.build_link(cfg)
    except Exception as e:  # noqa: BLE001
        err = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        return err, {"ok": None, "error": "no link"}
    detail = ("serial uart %d" % cfg.serial["uart"]) if cfg.link == "serial" else \
        ("mqtt %s:%d" % (cfg.mqtt["broker"], cfg.mqtt["port"]))
    boot = C.next_boot(key=cfg.key)
    if not boot:
        return {"ok": True, "detail": detail}, {"ok": False, "error": "boot counter used up: re-key the device"}
    ob = Outbox("outbox.bin", cfg.outbox_slots)
    app = App(cfg, link, _NoFeedback(), ob, boot, C.load_params(), None, 0, False)
    tasks = [asyncio.create_task(link.run()), asyncio.create_task(app.session.run())]
    t0 = ticks_ms()
    while not app.session.online and ticks_diff(ticks_ms(), t0) < wait_ms:
        await asyncio.sleep_ms(50)
    connected = link.connected
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
    return link_r, hello


def run(wait_ms=6000):
    import config as C
    try:
        cfg = C.load()
    except C.ConfigError as e:
        r = {"config": {"ok": False, "error": str(e)}}
        print(json.dumps(r))
        return r

    async def go():
        reader = await _reader(cfg)
        link, hello = await _link_and_hello(cfg, wait_ms)
        return {"reader": reader, "link": link, "hello": hello}

    r = asyncio.run(go())
    print(json.dumps(r))
    return r


if __name__ == "__main__":
    run()
