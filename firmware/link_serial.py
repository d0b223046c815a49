# Runs on the ESP32 (and the unix port in tests): the serial link, COBS+CRC frames over machine.UART.
#
# The UART is polled (any() + readinto): that works on the ESP32 port and with the unix-port
# stand-in alike. Idle, every _IDLE_MS; for _ANSWER_MS after a frame went out (the host's
# answer is on its way: a DECISION, WELCOME or PONG), on every pass of the event loop, so an
# answer is read as soon as its last byte is in (a 3 ms poll added 1.5 ms to a tap on average).
# Frames are encoded into buffers allocated once (FrameWriter).
# A serial line has no connection state: `connected` is True once the UART is open; the app
# finds out whether the host answers with HELLO/PING.
import asyncio

from protocol.compat import const, ticks_diff, ticks_ms
from protocol.framing import FrameParser, FrameWriter

_RX_CHUNK = const(256)
_IDLE_MS = const(3)
_ANSWER_MS = const(100)  # poll without sleeping this long after a send (or until a frame came)


class SerialLink:
    def __init__(self, machine, uart_id, baud, tx=None, rx=None, uart=None):
        if uart is None:
            kw = {"baudrate": baud, "timeout": 0, "rxbuf": 1024}
            if tx is not None:
                kw["tx"] = tx
            if rx is not None:
                kw["rx"] = rx
            uart = machine.UART(uart_id, **kw)
        self.uart = uart
        self.parser = FrameParser()
        self.writer = FrameWriter()
        self._rx = bytearray(_RX_CHUNK)
        self._mv = memoryview(self._rx)
        self.connected = True
        self.on_packet = None
        self.sent = 0
        self.alive = ticks_ms()
        self._sent_at = self.alive
        self._waiting = False   # a frame went out and nothing came back yet

    async def send(self, pkt):
        frame = self.writer.encode(pkt)
        n = self.uart.write(frame)
        self.sent += 1
        self._sent_at = ticks_ms()
        self._waiting = True
        return n is not None and n > 0

    async def run(self):
        uart = self.uart
        mv = self._mv
        while True:
            now = ticks_ms()
            self.alive = now
            n = uart.any()
            k = uart.readinto(mv[:n if n < _RX_CHUNK else _RX_CHUNK]) if n else 0
            if not k:
                if self._waiting and ticks_diff(now, self._sent_at) < _ANSWER_MS:
                    await asyncio.sleep_ms(0)
                else:
                    self._waiting = False
                    await asyncio.sleep_ms(_IDLE_MS)
                continue
            for pkt in self.parser.feed(mv[:k]):
                self._waiting = False
                if self.on_packet is not None:
                    self.on_packet(pkt)
            await asyncio.sleep_ms(0)

    @property
    def dropped(self):
        return self.parser.dropped
