# Runs under the MicroPython unix port (tests/test_firmware_units.py; by hand: MICROPYPATH=sim/mpy:firmware:. micropython tests/mpy/mqtt_echo.py PORT N): MQTTClient against a real broker: publish N messages, print what comes down until 'quit'.
import asyncio, sys
from mqtt import MQTTClient
port = int(sys.argv[1])
n = int(sys.argv[2])
c = MQTTClient("dev-7", "127.0.0.1", port, keepalive=5,
               will=(b"tk/dev-7/status", b"offline", True, 1),
               birth=(b"tk/dev-7/status", b"online", True, 1),
               subs=((b"tk/dev-7/down", 1),))
got = []
c.on_message = lambda t, p: got.append(bytes(p))
async def main():
    asyncio.create_task(c.run())
    sent = 0
    while True:
        if c.connected and sent < n:
            if await c.publish(b"tk/dev-7/up", b"msg%d" % sent):
                sent += 1
        for m in got:
            print("DOWN", m.decode())
            if m == b"quit":
                await asyncio.sleep_ms(200)
                print("INFLIGHT", c.inflight(), "CONNECTS", c.connects)
                return
        got.clear()
        await asyncio.sleep_ms(20)
asyncio.run(main())
