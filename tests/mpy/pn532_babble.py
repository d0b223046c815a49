# Runs on MicroPython (and CPython): firmware/pn532.py against a chip that sends stray ACK frames
# forever after ACKing a command. Prints one line per case (tests/test_pn532_micropython.py).
# By hand: MICROPYPATH=firmware:. micropython tests/mpy/pn532_babble.py
import asyncio

from pn532 import PN532, HSUBus, PN532Timeout

ACK = b"\x00\x00\xff\x00\xff\x00"
LIMIT = 200000  # only stops a broken driver from spinning for good


class BabblingUART:
    # machine.UART with timeout=0. After a command: its ACK, then one stray ACK per read, until
    # the host aborts the command with an ACK of its own.
    def __init__(self):
        self.rx = bytearray()
        self.babbling = False
        self.stray = 0
        self.last = b""

    def write(self, data):
        data = bytes(data)
        self.last = data
        self.babbling = data != ACK and data[:2] != b"\x55\x55"
        if self.babbling:
            self.rx += ACK
        return len(data)

    def any(self):
        return len(self.rx) or (6 if self.babbling else 0)

    def readinto(self, mv):
        if not self.rx and self.babbling:
            self.stray += 1
            if self.stray > LIMIT:
                raise RuntimeError("stuck")
            self.rx += ACK
        n = min(len(mv), len(self.rx))
        if not n:
            return None
        mv[:n] = self.rx[:n]
        self.rx = self.rx[n:]
        return n


async def main():
    uart = BabblingUART()
    chip = PN532(HSUBus(uart))
    try:
        await chip.read_target(20)
        print("answered")
    except PN532Timeout as e:
        print("timeout", "0x4A" in str(e), uart.stray > 1, uart.last == ACK)
    except RuntimeError as e:
        print(e, uart.stray)


asyncio.run(main())
