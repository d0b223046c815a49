# Runs under the MicroPython unix port (tests/test_firmware_units.py; by hand: MICROPYPATH=sim/mpy:firmware:. micropython tests/mpy/sale_display.py ): SALE shows, blinks, times out, is cleared, and the next TAP carries it.
import asyncio
import time

import config as C
from app import App
from outbox import Outbox
from protocol import packet as P
from protocol.mac import Mac

KEY = bytes(range(32))
MAC = Mac(KEY)
DEV = "kiosk-1"


class Fb:
    def __init__(self):
        self.shown = []

    def show(self, pattern, relay_ms=0, text=None):
        self.shown.append((pattern, text))


class Link:
    connected = True
    on_packet = None

    def __init__(self):
        self.app = None
        self.taps = []
        self.seq = 0x20000

    async def send(self, pkt):
        p = P.decode(pkt, MAC, P.UP)
        if p.type == P.TAP:
            f = p.fields
            self.taps.append((f["sale_id"], f["amount"]))
            self.seq += 1
            self.app.on_packet(P.encode(P.DECISION, self.seq, DEV, {
                "tap_seq": p.seq, "verdict": 1, "reason": 0, "relay_ms": 0, "pattern": 1,
                "balance": 100, "points": 1, "uses": -1, "text": "paid", "sale_id": f["sale_id"]},
                MAC, P.DOWN))
        return True


def sale(seq, sid, amount, timeout_s=60, text="Pay 24.00"):
    return P.encode(P.SALE, seq, DEV, {"sale_id": sid, "amount": amount, "service": 0,
                                       "timeout_s": timeout_s, "text": text}, MAC, P.DOWN)


cfg = C.check({"device_id": DEV, "kind": "kiosk", "key": KEY.hex(), "link": "serial",
               "serial": {"uart": 2}, "reader": {"bus": "hsu"}, "amount": 700})
fb = Fb()
link = Link()
app = App(cfg, link, fb, Outbox("ob.bin", 4), 1, None, None, 0, False)
link.app = app
app.session.online = True
s = app.sale
app.on_packet(sale(0x10001, 42, 2400))
print("ARMED", s.id, s.amount, "SHOWN", fb.shown[-1][1])
app.on_packet(sale(0x10002, 41, 0))          # clearing another sale changes nothing
print("OTHER_CLEAR", s.id)
app.on_packet(sale(0x10003, 42, 0))
print("CLEARED", s.id, fb.shown[-1][1])
app.on_packet(sale(0x10004, 43, 500, timeout_s=1))
time.sleep_ms(1100)
print("TIMED_OUT", s.active(), fb.shown[-1][1])


async def taps():
    asyncio.create_task(app.uplink.run())
    app.on_packet(sale(0x10005, 44, 2400))
    await app.tap_path.tap(b"\x04\xa1\xb2\xc3", 0)
    print("PAID_TAP", link.taps[-1], "SALE_AFTER", s.id)
    await app.tap_path.tap(b"\x04\xa1\xb2\xc4", 0)
    print("PLAIN_TAP", link.taps[-1])

asyncio.run(taps())
