# Runs under the MicroPython unix port, cwd = a scratch dir (tests/test_firmware_units.py): the reader's task never waits on the link.
# A link whose send does not return until the test opens it (an MQTT publish waiting for a
# free in-flight slot, for ever). Two taps in a row go unanswered: each must return at once
# (the reader reads the next card), and once the link sends again the frames go out oldest
# seq first, the give-up VOIDs before the probe PING, each frame once.
import asyncio
import config as C
from app import App
from outbox import Outbox
from protocol import packet as P
from protocol.mac import Mac
KEY = bytes(range(32))
dev = Mac(KEY)
class Link:
    connected = True
    on_packet = None
    def __init__(self):
        self.sent = []
        self.open = asyncio.Event()
    async def send(self, pkt):
        p = P.decode(pkt, dev, P.UP)
        await self.open.wait()
        self.sent.append((p.type, p.seq))
        return True
class Fb:
    def show(self, *a):
        print("DISPLAY", a[2] if len(a) > 2 else "")
cfg = C.check({"device_id": "gate-01", "kind": "gate", "key": KEY.hex(), "link": "serial",
               "serial": {"uart": 2}, "reader": {"bus": "hsu"}, "decision_ms": 100})
link = Link()
app = App(cfg, link, Fb(), Outbox("ob.bin", 8), 1, None, None, 0, False)
app.session.online = True          # welcomed: taps go online
NAMES = {P.TAP: "TAP", P.VOID: "VOID", P.PING: "PING"}
async def main():
    asyncio.create_task(app.uplink.run())
    for uid in (b"\x04\xa1\xb2\xc3", b"\x04\x11\x22\x33"):
        try:
            pat = await asyncio.wait_for_ms(app.tap_path.tap(uid, 8), 3000)
            print("TAP_RETURNED", pat)
        except asyncio.TimeoutError:
            print("TAP_BLOCKED")     # the reader's task waited on the link
    link.open.set()
    for _ in range(20):
        app.uplink.kick.set()
        await asyncio.sleep_ms(20)
    print("SENT", " ".join("%s:%d" % (NAMES.get(t, t), s & 0xFFFF) for t, s in link.sent))
    seqs = [s for t, s in link.sent]
    print("ORDERED", int(seqs == sorted(seqs)), "ONCE", int(len(set(seqs)) == len(seqs)))
    print("VOIDS", sum(1 for t, s in link.sent if t == P.VOID), "VOIDED", app.tap_path.voids)
asyncio.run(main())
