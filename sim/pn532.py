# Runs on CPython (tests, demo): an emulated NXP PN532 (firmware V1.6) behind HSU, I2C and SPI.
"""PN532 emulator that speaks the chip's host protocol as UM0701-02 describes it.

Host link, byte for byte:

- Information frame ``00 00 FF LEN LCS TFI PD0..PDn DCS 00`` with ``LEN + LCS == 0`` and
  ``TFI + sum(PD) + DCS == 0`` (mod 256); TFI is D4 host->chip, D5 chip->host.
- Extended frame ``00 00 FF FF FF LENM LENL LCS TFI ... DCS 00`` for more than 255 bytes.
- ACK ``00 00 FF 00 FF 00`` (the chip sends it when a frame arrived with good checksums; the
  host sends it to abort the command in progress) and NACK ``00 00 FF FF 00 00`` (the host asks
  for the last response again).
- Application-level error frame ``00 00 FF 01 FF 7F 81 00`` for an unknown command or bad
  parameters (sent after the ACK, in place of the response).
- A frame whose length or data checksum is wrong is dropped without an ACK.
- HSU: after power-up (LowVbat) and after PowerDown the chip sleeps; the first byte it receives
  wakes it and is lost (hosts send ``55 55 00 00 00`` or a long preamble first).

Transports (each in a background daemon thread; one host at a time, like the real chip):

- ``serve_tcp(port=0) -> port``: HSU as a raw byte stream over TCP.
- ``serve_pty() -> slave path``: HSU over a pseudo terminal (raw mode), for pyserial/nfcpy.
- ``serve_bus(port=0) -> port``: the I2C and SPI interfaces and the chip's pins, carried as
  request/response messages over TCP so the MicroPython stand-ins in ``sim/mpy`` stay in
  program order. Request ``kind:1 | len:u16 | payload``; reply ``len:u16 | payload``:

  ===  ==========================  ===============================================
  W    I2C write transaction       payload ``addr:u8 | data``; reply ``01`` ACK or ``00`` NACK
  R    I2C read transaction        payload ``addr:u8 | n:u16``; reply n bytes (empty = NACK):
                                   status byte (01 ready / 00 busy) then the frame, 00-padded
  X    SPI exchange (full duplex)  payload MOSI bytes as the chip decodes them (LSB first on
                                   the wire); reply the MISO bytes. Needs the ``ss`` pin.
  P    pin driven by the host      payload ``level:u8 | name`` (``rstpdn``, ``ss``)
  Q    pin read by the host        payload ``name`` (``irq``: 0 while a response waits)
  ===  ==========================  ===============================================

Fault injection: ``hang()`` (no answer on any interface until reset), ``reset()`` (what a
pulse on RSTPDN does), ``corrupt_next(n)`` (the next n response frames carry a bad DCS),
``babble()`` (commands are ACKed, then answered only with stray ACK frames until reset).
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import struct
import sys
import threading
import time
import tty
from collections import deque

from sim.cards import UidCard
from sim.isodep import IsoDepPicc

ACK = bytes.fromhex("0000FF00FF00")
NACK = bytes.fromhex("0000FFFF0000")
ERROR_FRAME = bytes.fromhex("0000FF01FF7F8100")

I2C_ADDRESS = 0x24

# SPI operation bytes (first byte after SS goes low).
SPI_DW = 0x01
SPI_SR = 0x02
SPI_DR = 0x03

# Status bytes of InDataExchange & co (UM0701-02 table 7.1).
ST_OK = 0x00
ST_TIMEOUT = 0x01
ST_BUFFER = 0x07
ST_PARAM = 0x10
ST_CONTEXT = 0x27

_FIFO_DATA = 0x6339
_SENS_REQ = 0x26

# Power-up values of the CIU registers nfcpy reads; the rest read as 0.
_REG_DEFAULTS = {
    0x6301: 0x3B,  # CIU_Mode
    0x6302: 0x80,  # CIU_TxMode
    0x6303: 0x80,  # CIU_RxMode
    0x6304: 0x80,  # CIU_TxControl (field off)
    0x6305: 0x40,  # CIU_TxAuto
    0x6327: 0x80,  # CIU_Version
}

_BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1288000)

# Lengths of the RFConfiguration items (CfgItem -> ConfigurationData length).
_RF_ITEM_LEN = {0x01: 1, 0x02: 3, 0x04: 1, 0x05: 3, 0x0A: 11, 0x0B: 8, 0x0C: 3, 0x0D: 9}

# Largest data the chip sends back in one frame (host_command_frame_max_size 265 - D5 cmd - status).
_MAX_EXCHANGE = 262


class _SyntaxError(Exception):
    """Internal: the chip answers with the application-level error frame."""

    def __init__(self, why: str) -> None:
        super().__init__(why)


_PENDING = object()
_BABBLE_S = 0.005  # babble(): one stray ACK frame this often


def frame(tfi_and_data: bytes) -> bytes:
    """Build an information frame (normal or extended) around ``TFI + PD``."""
    body = bytes(tfi_and_data)
    dcs = (-sum(body)) & 0xFF
    n = len(body)
    if n <= 255:
        return b"\x00\x00\xff" + bytes((n, (-n) & 0xFF)) + body + bytes((dcs, 0))
    hi, lo = n >> 8, n & 0xFF
    return b"\x00\x00\xff\xff\xff" + bytes((hi, lo, (-(hi + lo)) & 0xFF)) + body + bytes((dcs, 0))


def _ats_with_tl(ats: bytes) -> bytes:
    ats = bytes(ats or b"")
    if not ats:
        return b""
    if ats[0] == len(ats):
        return ats
    return bytes((len(ats) + 1,)) + ats


def _atqa_bytes(atqa) -> bytes:
    if isinstance(atqa, int):
        return atqa.to_bytes(2, "big")
    return bytes(atqa)


class PN532Emulator:
    """One emulated PN532 chip with an RF field where one virtual card can lie."""

    def __init__(self, card=None, firmware: tuple[int, int, int, int] = (0x32, 0x01, 0x06, 0x07)):
        self.firmware = bytes(firmware)
        self._lock = threading.RLock()
        self._card = card
        self._wake_fds: list[int] = []
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._closed = False
        self.commands: list[int] = []  # command codes received (for tests)
        self.resets = 0  # how many times the chip was reset (pin or reset())
        self._in_reset = False
        self._corrupt = 0
        self._spi_state: dict | None = None
        self._power_on()

    # ----------------------------------------------------------------- state

    def _power_on(self) -> None:
        self._asleep = True  # LowVbat after power-up: HSU needs a wake-up byte
        self._hung = False
        self._rx = bytearray()
        self._out: deque[bytes] = deque()
        self._last_response: bytes | None = None
        self._pending: tuple[int, bytes] | None = None
        self._regs = dict(_REG_DEFAULTS)
        self._params = 0x14  # SetParameters: fAutomaticRATS | fAutomaticATR_RES
        self._max_retry_passive = 0xFF
        self._rf_on = False
        self._target = None
        self._isodep = None
        self._sam_mode = 0
        self.baudrate = 115200
        self._babble = False
        self._last_stray = 0.0

    # ------------------------------------------------------------ test API

    def place(self, card) -> None:
        """Put a card on the field (replaces any card there)."""
        if not (hasattr(card, "uid") and hasattr(card, "sak")) and not hasattr(card, "idm"):
            raise TypeError(f"not a card (needs uid/sak/atqa or idm): {card!r}")
        with self._lock:
            self._card = card
            self._complete_pending()

    def remove(self) -> None:
        """Take the card off the field."""
        with self._lock:
            self._card = None

    @property
    def card(self):
        return self._card

    def hang(self) -> None:
        """The chip stops answering on every interface until reset."""
        with self._lock:
            self._hung = True

    @property
    def hung(self) -> bool:
        return self._hung

    def reset(self) -> None:
        """What a low pulse on RSTPDN does: the chip restarts from power-up."""
        with self._lock:
            self.resets += 1
            self._power_on()
            self._wake()

    def babble(self) -> None:
        """The chip still ACKs commands but answers none: it sends stray ACK frames instead,
        one every few ms on every interface, until reset."""
        with self._lock:
            self._babble = True
        self._wake()

    @property
    def babbling(self) -> bool:
        return self._babble

    def corrupt_next(self, n: int = 1) -> None:
        """Corrupt the data checksum of the next ``n`` response frames (not ACKs)."""
        with self._lock:
            self._corrupt += n

    def set_rstpdn(self, level: int) -> None:
        """Drive the RSTPDN pin: low holds the chip in reset, the rising edge restarts it."""
        with self._lock:
            if not level and not self._in_reset:
                self._in_reset = True
                self._out.clear()
            elif level and self._in_reset:
                self._in_reset = False
                self.resets += 1
                self._power_on()

    # ------------------------------------------------------- byte protocol

    def _alive(self) -> bool:
        return not (self._hung or self._in_reset)

    def feed(self, data: bytes, wake: bool = True) -> None:
        """Bytes from the host (HSU line, I2C write, SPI DW). ``wake`` handles HSU sleep."""
        with self._lock:
            if not self._alive():
                return
            data = bytes(data)
            if wake and self._asleep and data:
                self._asleep = False
                data = data[1:]  # the byte that woke the chip is lost
            elif not wake:
                self._asleep = False
            self._rx += data
            self._parse()

    def _stray(self) -> None:
        # babble(): queue one stray ACK when the last one is old enough and nothing else waits.
        now = time.monotonic()
        if self._babble and self._alive() and not self._out and now - self._last_stray >= _BABBLE_S:
            self._last_stray = now
            self._out.append(ACK)

    def read_frame(self) -> bytes | None:
        """Next frame the chip has for the host, or None."""
        with self._lock:
            self._stray()
            if not self._alive() or not self._out:
                return None
            return self._out.popleft()

    def ready(self) -> bool:
        with self._lock:
            self._stray()
            return self._alive() and bool(self._out)

    def _parse(self) -> None:
        rx = self._rx
        while True:
            i = rx.find(b"\x00\xff")
            if i < 0:
                if rx and rx[-1] == 0:
                    del rx[:-1]
                else:
                    rx.clear()
                return
            del rx[:i]
            if len(rx) < 4:
                return
            a, b = rx[2], rx[3]
            if a == 0x00 and b == 0xFF:
                del rx[:4]
                self._host_ack()
                continue
            if a == 0xFF and b == 0x00:
                del rx[:4]
                if self._last_response is not None:
                    self._emit(self._last_response, raw=True)
                continue
            if a == 0xFF and b == 0xFF:
                if len(rx) < 7:
                    return
                if (rx[4] + rx[5] + rx[6]) & 0xFF:
                    del rx[:2]
                    continue
                n = rx[4] << 8 | rx[5]
                head = 7
            else:
                if (a + b) & 0xFF:
                    del rx[:2]
                    continue
                n = a
                head = 4
            if len(rx) < head + n + 1:
                return
            body = bytes(rx[head:head + n])
            dcs = rx[head + n]
            del rx[:head + n + 1]
            if (sum(body) + dcs) & 0xFF:
                continue  # bad DCS: no ACK, the host times out and retries
            self._command(body)

    def _host_ack(self) -> None:
        # UM0701-02 6.2.1.3: an ACK from the host aborts the command being processed.
        self._pending = None
        self._out.clear()

    def _emit(self, data: bytes, raw: bool = False) -> None:
        if not raw and data != ACK and self._corrupt > 0:
            self._corrupt -= 1
            data = bytearray(data)
            data[-2] ^= 0x5A
            data = bytes(data)
        self._out.append(data)
        self._wake()

    def _wake(self) -> None:
        for fd in list(self._wake_fds):
            try:
                os.write(fd, b"!")
            except OSError:
                pass

    def _respond(self, code: int, data: bytes) -> None:
        rsp = frame(bytes((0xD5, code + 1)) + bytes(data))
        self._last_response = rsp
        self._emit(rsp)

    def _command(self, body: bytes) -> None:
        self._emit(ACK)
        if self._babble:
            if len(body) >= 2:
                self.commands.append(body[1])
            return
        if len(body) < 2 or body[0] != 0xD4:
            self._syntax_error()
            return
        code = body[1]
        self.commands.append(code)
        self._pending = None
        handler = _HANDLERS.get(code)
        if handler is None:
            self._syntax_error()
            return
        try:
            rsp = handler(self, body[2:])
        except _SyntaxError:
            self._syntax_error()
            return
        if rsp is _PENDING:
            self._pending = (code, body[2:])
            return
        self._respond(code, rsp)
        if code == 0x16:  # PowerDown: asleep once the response is out
            self._asleep = True

    def _syntax_error(self) -> None:
        self._last_response = ERROR_FRAME
        self._out.append(ERROR_FRAME)
        self._wake()

    def _complete_pending(self) -> None:
        if self._pending is None or not self._alive():
            return
        code, params = self._pending
        rsp = _HANDLERS[code](self, params)
        if rsp is not _PENDING:
            self._pending = None
            self._respond(code, rsp)

    # ------------------------------------------------------------ commands

    def _cmd_diagnose(self, p: bytes) -> bytes:
        if not p:
            raise _SyntaxError("Diagnose needs NumTst")
        test = p[0]
        if test == 0x00:  # communication line test: echo
            return bytes(p)
        if test in (0x01, 0x02):  # ROM / RAM test
            return b"\x00"
        if test == 0x05:  # attention request: is the target still there?
            present = self._target is not None and self._target is self._card
            return bytes((ST_OK if present else ST_TIMEOUT,))
        if test == 0x06:  # self antenna test
            return b"\x00"
        raise _SyntaxError(f"Diagnose test {test} not emulated")

    def _cmd_firmware(self, p: bytes) -> bytes:
        return self.firmware

    def _cmd_status(self, p: bytes) -> bytes:
        present = self._target is not None
        out = bytes((0x00, int(self._rf_on), int(present)))
        if present:
            out += b"\x01\x00\x00\x00"
        return out + b"\x01"

    def _cmd_read_register(self, p: bytes) -> bytes:
        if not p or len(p) % 2:
            raise _SyntaxError("ReadRegister takes 16-bit addresses")
        return bytes(self._regs.get(p[i] << 8 | p[i + 1], 0) for i in range(0, len(p), 2))

    def _cmd_write_register(self, p: bytes) -> bytes:
        if not p or len(p) % 3:
            raise _SyntaxError("WriteRegister takes address/value triples")
        for i in range(0, len(p), 3):
            self._regs[p[i] << 8 | p[i + 1]] = p[i + 2]
        return b""

    def _cmd_read_gpio(self, p: bytes) -> bytes:
        return b"\xff\xff\x00"

    def _cmd_empty(self, p: bytes) -> bytes:
        return b""

    def _cmd_baud(self, p: bytes) -> bytes:
        if len(p) != 1 or p[0] >= len(_BAUD_RATES):
            raise _SyntaxError("SetSerialBaudrate BR")
        self.baudrate = _BAUD_RATES[p[0]]
        return b""

    def _cmd_set_parameters(self, p: bytes) -> bytes:
        if len(p) != 1:
            raise _SyntaxError("SetParameters takes one flag byte")
        self._params = p[0]
        return b""

    def _cmd_sam(self, p: bytes) -> bytes:
        if not 1 <= len(p) <= 3 or not 1 <= p[0] <= 4:
            raise _SyntaxError("SAMConfiguration Mode")
        self._sam_mode = p[0]
        return b""

    def _cmd_power_down(self, p: bytes) -> bytes:
        if not 1 <= len(p) <= 2:
            raise _SyntaxError("PowerDown WakeUpEnable")
        self._rf_on = False
        self._target = None
        return b"\x00"

    def _cmd_rf_configuration(self, p: bytes) -> bytes:
        if not p or _RF_ITEM_LEN.get(p[0]) != len(p) - 1:
            raise _SyntaxError("RFConfiguration item/length")
        item = p[0]
        if item == 0x01:
            self._rf_on = bool(p[1] & 0x01)
            self._regs[0x6304] = 0x83 if self._rf_on else 0x80
            if not self._rf_on:
                self._target = None
        elif item == 0x05:
            self._max_retry_passive = p[3]
        return b""

    def _cmd_in_list(self, p: bytes):
        if len(p) < 2 or not 1 <= p[0] <= 2 or p[1] not in (0, 1, 2, 3, 4):
            raise _SyntaxError("InListPassiveTarget MaxTg/BrTy")
        brty, data = p[1], p[2:]
        self._rf_on = True
        self._regs[0x6304] = 0x83
        self._target = None
        card = self._card
        if brty == 0:
            found = self._select_type_a(card, data)
        elif brty in (1, 2):
            if len(data) != 5:
                raise _SyntaxError("FeliCa polling payload is 5 bytes")
            found = self._poll_felica(card, data)
        else:
            found = None  # no Type B or Jewel cards are emulated
        if found is None:
            if brty == 0:
                self._regs[_FIFO_DATA] = _SENS_REQ  # SENS_REQ left unanswered in the FIFO
            if self._max_retry_passive == 0xFF:
                return _PENDING  # the real chip keeps trying until a card or an ACK
            return b"\x00"
        self._target = card
        # A freshly selected ISO-DEP card: its block protocol for hosts that run ISO-DEP
        # themselves over InCommunicateThru (nfcpy); after automatic RATS it is already active.
        self._isodep = (IsoDepPicc(card, active=bool(self._params & 0x10))
                        if getattr(card, "sak", 0) & 0x20 and hasattr(card, "transceive")
                        else None)
        self._regs[_FIFO_DATA] = 0x00
        return b"\x01\x01" + found

    def _select_type_a(self, card, uid_filter: bytes) -> bytes | None:
        if card is None or not hasattr(card, "sak"):
            return None
        uid = bytes(card.uid)
        if uid_filter:
            # The host gives the UID with its cascade tags (88h) as sent in the SEL commands.
            f = bytes(uid_filter)
            if len(f) == 4:
                wanted = f
            elif len(f) == 8 and f[0] == 0x88:
                wanted = f[1:]
            elif len(f) == 12 and f[0] == 0x88 and f[4] == 0x88:
                wanted = f[1:4] + f[5:]
            else:
                raise _SyntaxError("InListPassiveTarget 106A UID")
            if wanted != uid:
                return None
        out = _atqa_bytes(card.atqa) + bytes((card.sak & 0xFF, len(uid))) + uid
        if card.sak & 0x20 and self._params & 0x10:
            out += _ats_with_tl(getattr(card, "ats", b""))
        return out

    def _poll_felica(self, card, request: bytes) -> bytes | None:
        if card is None or not hasattr(card, "polling_response"):
            return None
        rsp = card.polling_response(bytes(request))
        if not rsp:
            return None
        return bytes((len(rsp) + 1,)) + rsp

    def _cmd_in_data_exchange(self, p: bytes) -> bytes:
        if not p:
            raise _SyntaxError("InDataExchange Tg")
        if p[0] & 0x3F != 1 or self._target is None:
            return bytes((ST_CONTEXT,))
        card = self._target
        if card is not self._card or not hasattr(card, "transceive"):
            return bytes((ST_TIMEOUT,))
        try:
            rsp = card.transceive(bytes(p[1:]))
        except Exception:  # the card model failed: on air that is silence
            rsp = None
        if rsp is None:
            return bytes((ST_TIMEOUT,))
        if len(rsp) > _MAX_EXCHANGE:
            return bytes((ST_BUFFER,))
        return b"\x00" + bytes(rsp)

    def _cmd_in_communicate_thru(self, p: bytes) -> bytes:
        card = self._target
        if card is None or card is not self._card:
            return bytes((ST_TIMEOUT,))
        raw = getattr(card, "transceive_raw", None)
        if raw is None and self._isodep is not None:
            raw = self._isodep.transceive_raw
        if raw is None:
            return bytes((ST_TIMEOUT,))
        rsp = raw(bytes(p))
        return bytes((ST_TIMEOUT,)) if rsp is None else b"\x00" + bytes(rsp)

    def _cmd_in_release(self, p: bytes) -> bytes:
        if len(p) != 1:
            raise _SyntaxError("InRelease/InDeselect Tg")
        if p[0] not in (0, 1):
            return bytes((ST_CONTEXT,))
        self._target = None
        return b"\x00"

    def _cmd_in_select(self, p: bytes) -> bytes:
        if len(p) != 1:
            raise _SyntaxError("InSelect Tg")
        return b"\x00" if self._target is not None else bytes((ST_CONTEXT,))

    # ------------------------------------------------------------ I2C / SPI

    def i2c_write(self, addr: int, data: bytes) -> bool:
        with self._lock:
            if addr != I2C_ADDRESS or self._in_reset:
                return False
            self.feed(data, wake=False)
            return True

    def i2c_read(self, addr: int, n: int) -> bytes | None:
        with self._lock:
            if addr != I2C_ADDRESS or self._in_reset:
                return None
            if n <= 0:
                return b""
            if not self.ready():
                return bytes(n)  # status 00: not ready
            head = self._out[0]
            if n > 1:
                self._out.popleft()  # a read past the status byte takes the frame
            out = (b"\x01" + head)[:n]
            return out + bytes(n - len(out))

    def spi_select(self, level: int) -> None:
        with self._lock:
            if not level:
                self._spi_state = {"op": None, "sent": 0}
                return
            st, self._spi_state = self._spi_state, None
            if st and st["op"] == SPI_DR and st["sent"] > 0 and self._out and self._alive():
                self._out.popleft()

    def spi_exchange(self, mosi: bytes) -> bytes:
        with self._lock:
            st = self._spi_state
            miso = bytearray(len(mosi))
            if st is None or self._in_reset:
                return bytes(miso)  # SS high: the chip ignores the bus
            for i, b in enumerate(mosi):
                if st["op"] is None:
                    st["op"] = b
                    continue
                if st["op"] == SPI_DW:
                    self.feed(bytes((b,)), wake=False)
                elif st["op"] == SPI_SR:
                    miso[i] = 0x01 if self.ready() else 0x00
                elif st["op"] == SPI_DR:
                    if self.ready():
                        head = self._out[0]
                        if st["sent"] < len(head):
                            miso[i] = head[st["sent"]]
                        st["sent"] += 1
            return bytes(miso)

    def irq_level(self) -> int:
        # P70_IRQ goes low while a frame waits for the host.
        return 0 if self.ready() else 1

    # ----------------------------------------------------------- transports

    def _new_wake_pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        os.set_blocking(r, False)
        with self._lock:
            self._wake_fds.append(w)
        return r, w

    def _start(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True, name="pn532-emulator")
        t.start()
        self._threads.append(t)

    def _pump(self, fd_in: int, write, wake_r: int) -> None:
        # Move bytes both ways between one HSU stream and the chip until the stream closes.
        while not self._closed:
            try:
                ready, _, _ = select.select([fd_in, wake_r], [], [], _BABBLE_S if self._babble else 0.5)
            except (OSError, ValueError):
                return
            if wake_r in ready:
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
            if fd_in in ready:
                try:
                    data = os.read(fd_in, 4096)
                except OSError:
                    return
                if not data:
                    return
                self.feed(data)
            while True:
                f = self.read_frame()
                if f is None:
                    break
                try:
                    write(f)
                except OSError:
                    return

    def serve_tcp(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Serve HSU as a raw TCP byte stream; returns the port."""
        srv = socket.create_server((host, port))
        self._sockets.append(srv)
        wake_r, _ = self._new_wake_pipe()

        def loop() -> None:
            while not self._closed:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self._lock:
                    self._out.clear()
                    self._rx.clear()
                self._sockets.append(conn)
                self._pump(conn.fileno(), conn.sendall, wake_r)
                conn.close()

        self._start(loop)
        return srv.getsockname()[1]

    def serve_pty(self) -> str:
        """Serve HSU on a pseudo terminal; returns the slave device path."""
        master, slave = os.openpty()
        tty.setraw(slave)
        path = os.ttyname(slave)
        wake_r, _ = self._new_wake_pipe()
        # Keep our slave fd open so the master never sees EIO when the host closes its side.
        self._pty_fds = (master, slave)

        def write(data: bytes) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(master, view):]

        self._start(self._pump, master, write, wake_r)
        return path

    def serve_bus(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Serve the I2C/SPI/pin message protocol (see module doc); returns the port."""
        srv = socket.create_server((host, port))
        self._sockets.append(srv)

        def conn_loop(conn: socket.socket) -> None:
            try:
                while True:
                    head = _recv_exact(conn, 3)
                    if head is None:
                        return
                    kind, n = head[0:1], struct.unpack(">H", head[1:3])[0]
                    payload = _recv_exact(conn, n) if n else b""
                    if payload is None:
                        return
                    reply = self._bus_request(kind, payload)
                    conn.sendall(struct.pack(">H", len(reply)) + reply)
            except OSError:
                return
            finally:
                conn.close()

        def accept_loop() -> None:
            while not self._closed:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sockets.append(conn)
                self._start(conn_loop, conn)

        self._start(accept_loop)
        return srv.getsockname()[1]

    def _bus_request(self, kind: bytes, p: bytes) -> bytes:
        if kind == b"W" and p:
            return b"\x01" if self.i2c_write(p[0], p[1:]) else b"\x00"
        if kind == b"R" and len(p) == 3:
            got = self.i2c_read(p[0], p[1] << 8 | p[2])
            return got if got is not None else b""
        if kind == b"X":
            return self.spi_exchange(p)
        if kind == b"P" and p:
            name = p[1:].decode("ascii", "replace").lower()
            if name == "rstpdn":
                self.set_rstpdn(p[0])
            elif name in ("ss", "nss", "cs"):
                self.spi_select(p[0])
            return b""
        if kind == b"Q":
            name = p.decode("ascii", "replace").lower()
            return bytes((self.irq_level() if name == "irq" else 1,))
        return b""

    def close(self) -> None:
        """Stop serving (threads are daemons and end with the sockets)."""
        self._closed = True
        for s in self._sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        self._wake()
        for fd in getattr(self, "_pty_fds", ()):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "PN532Emulator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


_HANDLERS = {
    0x00: PN532Emulator._cmd_diagnose,
    0x02: PN532Emulator._cmd_firmware,
    0x04: PN532Emulator._cmd_status,
    0x06: PN532Emulator._cmd_read_register,
    0x08: PN532Emulator._cmd_write_register,
    0x0C: PN532Emulator._cmd_read_gpio,
    0x0E: PN532Emulator._cmd_empty,
    0x10: PN532Emulator._cmd_baud,
    0x12: PN532Emulator._cmd_set_parameters,
    0x14: PN532Emulator._cmd_sam,
    0x16: PN532Emulator._cmd_power_down,
    0x32: PN532Emulator._cmd_rf_configuration,
    0x40: PN532Emulator._cmd_in_data_exchange,
    0x42: PN532Emulator._cmd_in_communicate_thru,
    0x44: PN532Emulator._cmd_in_release,
    0x4A: PN532Emulator._cmd_in_list,
    0x52: PN532Emulator._cmd_in_release,
    0x54: PN532Emulator._cmd_in_select,
}


def main(argv: list[str] | None = None) -> int:
    """Serve an emulated PN532 until interrupted; stdin lines ``place UID``/``remove``/``hang``/``reset``."""
    ap = argparse.ArgumentParser(prog="python -m sim.pn532", description=main.__doc__)
    ap.add_argument("--tcp", type=int, help="serve HSU on this TCP port (0 = any)")
    ap.add_argument("--bus", type=int, help="serve I2C/SPI/pins on this TCP port (0 = any)")
    ap.add_argument("--pty", action="store_true", help="serve HSU on a pseudo terminal")
    ap.add_argument("--card", help="UID (hex) of a card placed at start")
    ap.add_argument("--sak", type=lambda s: int(s, 0), default=0x08, help="SAK of --card")
    args = ap.parse_args(argv)
    if args.tcp is None and args.bus is None and not args.pty:
        print("error: give at least one of --tcp, --bus, --pty", file=sys.stderr)
        return 2
    emu = PN532Emulator()
    try:
        if args.card:
            emu.place(UidCard(bytes.fromhex(args.card), sak=args.sak))
    except ValueError as e:
        print(f"error: --card: {e}", file=sys.stderr)
        return 2
    if args.tcp is not None:
        print(f"HSU tcp:127.0.0.1:{emu.serve_tcp(args.tcp)}", flush=True)
    if args.bus is not None:
        print(f"bus tcp:127.0.0.1:{emu.serve_bus(args.bus)}", flush=True)
    if args.pty:
        print(f"HSU pty {emu.serve_pty()}", flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            try:
                if words[0] == "place" and len(words) >= 2:
                    sak = int(words[2], 0) if len(words) > 2 else 0x08
                    emu.place(UidCard(bytes.fromhex(words[1]), sak=sak))
                elif words[0] == "remove":
                    emu.remove()
                elif words[0] == "hang":
                    emu.hang()
                elif words[0] == "reset":
                    emu.reset()
                else:
                    print("commands: place UID [SAK] | remove | hang | reset", file=sys.stderr)
                    continue
            except ValueError as e:
                print(f"error: {e}", file=sys.stderr)
                continue
            print("ok", flush=True)
        while True:  # stdin closed (e.g. backgrounded): keep serving
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        emu.close()


if __name__ == "__main__":
    sys.exit(main())
