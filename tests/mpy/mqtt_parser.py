# Runs under the MicroPython unix port (tests/test_firmware_units.py): firmware/mqtt.py's parser and supervisor on canned bytes, no broker.
# Each case prints one line; argv picks one case or runs them all.
import asyncio
import sys

from mqtt import MQTTClient


class Canned:
    # A stream that hands out `data` `chunk` bytes per read, records writes, and then either
    # reports the connection closed (readinto -> 0) or goes quiet. drain() stalls forever
    # from drain number `stall` on (0: never).
    def __init__(self, data, chunk=1, quiet=False, stall=0):
        self.data = data
        self.pos = 0
        self.chunk = chunk
        self.quiet = quiet
        self.stall = stall
        self.out = bytearray()
        self.closed = False
        self.drains = 0

    async def readinto(self, mv):
        if self.pos >= len(self.data):
            if self.quiet:
                await asyncio.sleep_ms(60000)
            return 0
        k = min(self.chunk, len(mv), len(self.data) - self.pos)
        mv[:k] = self.data[self.pos:self.pos + k]
        self.pos += k
        await asyncio.sleep_ms(0)
        return k

    def write(self, data):
        self.out.extend(data)

    async def drain(self):
        self.drains += 1
        if self.stall and self.drains >= self.stall:
            await asyncio.sleep_ms(60000)

    def close(self):
        self.closed = True


def publish(topic, payload, qos=0, pid=1):
    body = bytes((len(topic) >> 8, len(topic) & 0xFF)) + topic
    if qos:
        body += bytes((pid >> 8, pid & 0xFF))
    body += payload
    n = len(body)
    head = bytearray((0x30 | (qos << 1),))
    while True:
        b = n & 0x7F
        n >>= 7
        head.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes(head) + body


def client(stream=None):
    c = MQTTClient("dev-7", "broker.invalid", keepalive=30, write_ms=200)
    c.got = []
    c.on_message = lambda t, p: c.got.append((bytes(t), bytes(p)))
    c.stream = stream
    if stream is not None:
        c._st = stream
    return c


def c_out(c):
    return c.stream.out


async def rx(c):
    await c._rx_loop()
    return c.got, c.last_error


async def short_reads():
    c = client(Canned(publish(b"tk/down", b"hello", qos=1, pid=0x1234) + publish(b"tk/down", b"two"), chunk=1))
    got, err = await rx(c)
    print("SHORT", got, "PUBACK", bytes(c_out(c)), type(err).__name__)


async def oversize():
    data = publish(b"tk/down", b"x" * 1000) + publish(b"tk/down", b"after")
    c = client(Canned(data, chunk=300))
    got, err = await rx(c)
    print("OVERSIZE", got, type(err).__name__)


async def malformed():
    # Topic length 200 in a PUBLISH of 9 bytes; then a good one that must not be reached.
    data = b"\x30\x09\x00\xc8tk/down" + publish(b"tk/down", b"late")
    c = client(Canned(data, chunk=4))
    got, err = await rx(c)
    print("MALFORMED", got, repr(err))
    c = client(Canned(b"\x30\xff\xff\xff\xff\x01", chunk=1))
    got, err = await rx(c)
    print("BADLEN", got, repr(err))


async def stalled():
    # CONNACK, then the connection stalls after the CONNECT went out: drain() never returns.
    # The client must drop it and reconnect (the second stream works), not hang in drain().
    streams = [Canned(b"\x20\x02\x00\x00", quiet=True, stall=2),
               Canned(b"\x20\x02\x00\x00" + publish(b"tk/down", b"second"), quiet=True)]
    used = []

    async def opener():
        s = streams[len(used)] if len(used) < len(streams) else Canned(b"", quiet=True)
        used.append(s)
        return s

    c = client()
    c.open_stream = opener
    c.birth = (b"tk/status", b"online", True, 1)
    task = asyncio.create_task(c.run())
    for _ in range(100):
        if c.got:
            break
        await asyncio.sleep_ms(50)
    task.cancel()
    print("STALLED", c.connects, c.got, "CLOSED", used[0].closed, "OPENED", len(used))


CASES = (("short", short_reads), ("oversize", oversize), ("malformed", malformed), ("stalled", stalled))
for name, case in CASES:
    if not sys.argv[1:] or name in sys.argv[1:]:
        asyncio.run(case())
