# Runs on the ESP32 (and the unix port in tests): the serial link, COBS+CRC frames over machine.UART.
#
# The UART is polled (any() + readinto) every few ms: that works on the ESP32 port and with the
# unix-port stand-in alike. Frames are encoded into buffers allocated once (FrameWriter).
# A serial line has no connection state: `connected` is True once the UART is open; the app
# finds out whether the host answers with HELLO/PING.
import asyncio

from protocol.compat import const, ticks_ms
from protocol.framing import FrameParser, FrameWriter

_RX_CHUNK = const(256)
_IDLE_MS = const(3)


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

    async def send(self, pkt):
        frame = self.writer.encode(pkt)
        n = self.uart.write(frame)
        self.sent += 1
        return n is not None and n > 0

    async def run(self):
        uart = self.uart
        mv = self._mv
        while True:
            self.alive = ticks_ms()
            n = uart.any()
            if not n:
                await asyncio.sleep_ms(_IDLE_MS)
                continue
            k = uart.readinto(mv[:n if n < _RX_CHUNK else _RX_CHUNK])
            if not k:
                await asyncio.sleep_ms(_IDLE_MS)
                continue
            for pkt in self.parser.feed(mv[:k]):
                if self.on_packet is not None:
                    self.on_packet(pkt)
            await asyncio.sleep_ms(0)

    @property
    def dropped(self):
        return self.parser.dropped
