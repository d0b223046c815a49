# Runs under the MicroPython unix port (tests/test_firmware_units.py; by hand: MICROPYPATH=sim/mpy:firmware:. micropython tests/mpy/config_ack.py ): a CONFIG is acknowledged only by an App that keeps it.
import config as C
from allowlist import AllowList
from app import App
from outbox import Outbox
from protocol import packet as P
from protocol.mac import Mac
KEY = bytes(range(32))
class Link:
    connected = True
    on_packet = None
class Fb:
    def show(self, *a):
        pass
cfg = C.check({"device_id": "gate-01", "kind": "gate", "key": KEY.hex(), "link": "serial",
               "serial": {"uart": 2}, "reader": {"bus": "hsu"}})
f = {"cfg_version": 5, "relay_ms": 900, "debounce_ms": 1000, "offline_after_s": 20,
     "heartbeat_s": 30, "allow_op": 1, "allow": [b"\x04\xa1\xb2\xc3"]}
for save in (False, True):
    allow = AllowList()
    app = App(cfg, Link(), Fb(), Outbox("ob.bin", 4), 1, None, allow, 0, save)
    app.on_packet(P.encode(P.CONFIG, 0x10001, "gate-01", f, Mac(KEY), P.DOWN))
    acks = [c for c in app.session.ctrl if c[0] == 3]
    print("SAVE", save, "ACKS", len(acks), "VERSION", app.params["cfg_version"], "ALLOW", allow.count)
