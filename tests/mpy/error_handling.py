# Runs under the MicroPython unix port, cwd = a scratch dir (tests/test_firmware_units.py): what host ERRORs do to outbox frames.
# Canned ERROR frames (MACed by the host key, as a real host answer is) go to App.on_packet.
# An ERROR may clear a slot only when it names a frame this session sent and still waits on,
# and `bad_mac` never clears one: an attacker who sends forged frames under our next seqs
# while our link is down gets authenticated ERRORs naming them; they must cost us nothing.
import sys
import config as C
from app import App
from outbox import Outbox
from protocol import packet as P
from protocol.compat import ticks_ms
from protocol.mac import Mac
KEY = bytes(range(32))
MALFORMED, BAD_MAC, REPLAY = 1, 2, 4
class Link:
    connected = True
    on_packet = None
class Fb:
    def show(self, *a):
        pass
cfg = C.check({"device_id": "wash-1", "kind": "wash", "key": KEY.hex(), "link": "serial",
               "serial": {"uart": 2}, "reader": {"bus": "hsu"}})
host = Mac(KEY)
down = [0x70000]
def error(ref, code):
    down[0] += 1
    app.on_packet(P.encode(P.ERROR, down[0], "wash-1", {"ref_seq": ref, "code": code, "text": ""}, host, P.DOWN))
def pending(seq):
    i = app.outbox.find(seq)
    return int(i >= 0 and app.outbox.state[i] == 1)
ob = Outbox("ob.bin", 4)
app = App(cfg, Link(), Fb(), ob, 1, None, None, 0, False)
tw = P.TapWriter("wash-1", Mac(KEY))
tap = app.next_seq()
ob.add(tap, tw.tap(tap, b"\x04\xa1\xb2\xc3", 8, 0, 0, 1, 2500, 0))
# The link was cut after the TAP was stored: not sent in this session.
error(tap, BAD_MAC)
error(tap + 1, BAD_MAC)                 # a forged frame under our next seq
print("UNSENT_BAD_MAC", pending(tap))
if len(sys.argv) > 1 and sys.argv[1] == "compat":
    raise SystemExit                    # the part that runs against any firmware version
error(tap, MALFORMED)
print("UNSENT_MALFORMED", pending(tap))
error(tap, REPLAY)
print("UNSENT_REPLAY", pending(tap), "RESYNC", app.uplink.resync)
i = ob.find(tap)
ob.mark_sent(i, ticks_ms())
error(tap, BAD_MAC)
print("SENT_BAD_MAC", pending(tap), "IN_FLIGHT", int(ob.in_flight(i)))
error(tap, REPLAY)
print("SENT_REPLAY", pending(tap), "RESYNC", app.uplink.resync, "IN_FLIGHT", int(ob.in_flight(i)))
# No answer: the TAP becomes a VOID (its own seq); it is sent.
app.tap_path.give_up(tap)
void = ob.seq_of(i)
ob.mark_sent(i, ticks_ms())
error(tap, MALFORMED)                   # names the old TAP seq: no slot has it any more
error(void, BAD_MAC)
print("VOID_BAD_MAC", pending(void), "VOID", int(ob.is_void(i)))
error(void, MALFORMED)                  # final for a frame in flight: cleared
print("VOID_MALFORMED", pending(void), "GIVEN_UP", app.uplink.given_up)
