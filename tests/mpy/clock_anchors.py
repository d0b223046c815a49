# Runs under the MicroPython unix port, cwd = a scratch dir (tests/test_firmware_units.py): the session's clock anchors over 20 days offline.
# The session ages its anchors on every pass of its loop (every 50 ms). Here time moves on in
# one-hour steps for 20 days (past the 2**30 ms ticks period of the ESP32), with a check after
# each step: the host clock stays exact and the offline time saturates between one and two days.
import config as C
from allowlist import AllowList
from app import App
from outbox import Outbox
from protocol.compat import ticks_add, ticks_diff, ticks_ms
DAY = 86400000
HOUR = 3600000
class Link:
    connected = False
    on_packet = None
class Fb:
    def show(self, *a):
        pass
cfg = C.check({"device_id": "gate-01", "kind": "gate", "key": "00" * 32, "link": "serial",
               "serial": {"uart": 2}, "reader": {"bus": "hsu"}})
app = App(cfg, Link(), Fb(), Outbox("ob.bin", 4), 1, None, AllowList(), 0, False)
s = app.session
now = ticks_ms()
s.host_time = 1000000
s.time_ticks = now
s.down_at = now
bad_time = bad_offline = 0
max_lag = max_off = 0
for h in range(1, 20 * 24 + 1):
    now = ticks_add(now, HOUR)
    s.age_clocks(now)
    lag = ticks_diff(now, s.time_ticks)
    off = ticks_diff(now, s.down_at)
    if s.host_time + lag // 1000 != 1000000 + h * 3600:
        bad_time += 1
    if off < min(h * HOUR, DAY) or off > 2 * DAY:
        bad_offline += 1
    max_lag = max(max_lag, lag)
    max_off = max(max_off, off)
print("BAD_TIME", bad_time, "BAD_OFFLINE", bad_offline)
print("MAX_LAG_H", max_lag // HOUR, "MAX_OFFLINE_H", max_off // HOUR)
