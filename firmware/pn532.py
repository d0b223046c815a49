# Runs on the ESP32 (MicroPython) and on CPython for unit tests: PN532 NFC front-end driver (HSU, I2C, SPI), asyncio.
#
# Frames per NXP UM0701-02: 00 00 FF LEN LCS D4 CMD params DCS 00 (host -> chip), D5 CMD+1 from
# the chip, ACK 00 00 FF 00 FF 00, extended frames 00 00 FF FF FF LENM LENL LCS for > 255 bytes.
# Every wait is an asyncio sleep: a command never blocks the loop for more than one bus transfer.
# One task at a time uses a PN532 object (the reader loop and the hooks it calls).
import asyncio

from protocol.compat import IS_MICROPYTHON, const, ticks_diff, ticks_ms

if IS_MICROPYTHON:
    _sleep_ms = asyncio.sleep_ms
else:
    def _sleep_ms(ms):
        return asyncio.sleep(ms / 1000)

# Commands (UM0701-02 chapter 7).
_DIAGNOSE = const(0x00)
_GET_FIRMWARE_VERSION = const(0x02)
_SAM_CONFIGURATION = const(0x14)
_RF_CONFIGURATION = const(0x32)
_IN_DATA_EXCHANGE = const(0x40)
_IN_LIST_PASSIVE_TARGET = const(0x4A)
_IN_RELEASE = const(0x52)

_HOST_TO_PN532 = const(0xD4)
_PN532_TO_HOST = const(0xD5)
_ERROR_TFI = const(0x7F)

# Buffers: extended header (8) + TFI/CMD (2) + 262 data + DCS/postamble (2), plus slack.
_TX_SIZE = const(276)
_RX_SIZE = const(300)
_PARAMS = const(10)  # where command parameters start in the TX buffer
_MAX_PARAMS = const(263)

_ACK_MS = const(30)  # the chip ACKs within 15 ms (UM0701-02 6.2.3); some slack
_POLL_MS = const(2)
_WAKE_MS = const(5)
_RESET_LOW_MS = const(20)
_RESET_BOOT_MS = const(10)

# Parser results.
_NEED = const(0)
_ACK = const(1)
_NACK = const(2)
_DATA = const(3)

_SPI_DW = const(0x01)
_SPI_SR = const(0x02)
_SPI_DR = const(0x03)

_ACK_FRAME = b"\x00\x00\xff\x00\xff\x00"
_NACK_FRAME = b"\x00\x00\xff\xff\x00\x00"
# HSU wake-up (UM0701-02 6.3.2.3): 55 55 then zeros long enough for the chip to start.
_HSU_WAKE = b"\x55\x55\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"


class PN532Error(Exception):
    def __init__(self, message):
        super().__init__(message)


class PN532Timeout(PN532Error):
    def __init__(self, message):
        super().__init__(message)


class PN532FrameError(PN532Error):
    def __init__(self, message):
        super().__init__(message)


class PN532StatusError(PN532Error):
    # status: the chip's error code (0x7F = application-level syntax error frame).
    def __init__(self, status, command):
        self.status = status
        self.command = command
        super().__init__("PN532 command 0x%02X failed with status 0x%02X" % (command, status))


def uid_hex(uid):
    # Canonical UID: uppercase hex, two digits per byte, so the length is kept.
    out = ""
    for b in uid:
        out += "0123456789ABCDEF"[b >> 4] + "0123456789ABCDEF"[b & 15]
    return out


# SAK -> card family (NXP AN10833 "MIFARE type identification procedure").
_SAK_TYPES = {
    0x00: "ultralight/ntag",
    0x01: "classic1k",
    0x08: "classic1k",
    0x88: "classic1k",
    0x09: "classic-mini",
    0x10: "plus2k",
    0x11: "plus4k",
    0x18: "classic4k",
    0x98: "classic4k",
    0x19: "classic2k",
    0x20: "iso-dep",
    0x28: "classic1k+iso-dep",
    0x38: "classic4k+iso-dep",
}


def card_type(sak):
    t = _SAK_TYPES.get(sak)
    if t is not None:
        return t
    if sak & 0x04:
        return "unknown"  # UID not complete: not a selected card
    if sak & 0x40:
        return "nfc-dep"
    if sak & 0x20:
        return "iso-dep"
    return "unknown"


class HSUBus:
    # High-speed UART. The machine.UART must be non-blocking (timeout=0) at 115200 8N1.
    stream = True

    def __init__(self, uart):
        self._uart = uart
        self._junk = bytearray(32)

    def wakeup(self):
        self._uart.write(_HSU_WAKE)

    def drain(self):
        while self._uart.any():
            if not self._uart.readinto(self._junk):
                break

    def write(self, frame):
        self._uart.write(frame)

    def ready(self):
        return self._uart.any() > 0

    def readinto(self, mv):
        n = self._uart.readinto(mv)
        return n or 0


class I2CBus:
    # I2C at 7-bit address 0x24: every read starts with a status byte (bit 0 = ready).
    stream = False

    def __init__(self, i2c, addr=0x24):
        self._i2c = i2c
        self._addr = addr
        self._buf = bytearray(1 + _RX_SIZE)
        self._mv = memoryview(self._buf)
        self._status = bytearray(1)

    def wakeup(self):
        pass  # the chip wakes on its own address

    def drain(self):
        pass

    def write(self, frame):
        self._i2c.writeto(self._addr, frame)

    def ready(self):
        self._i2c.readfrom_into(self._addr, self._status)
        return self._status[0] & 1

    def readinto(self, mv):
        n = len(mv)
        m = self._mv[:n + 1]
        self._i2c.readfrom_into(self._addr, m)
        if not m[0] & 1:
            return 0
        mv[:n] = m[1:n + 1]
        return n


_REV = None


def _reverse_table():
    global _REV
    if _REV is None:
        t = bytearray(256)
        for i in range(256):
            r = 0
            for b in range(8):
                if i & (1 << b):
                    r |= 0x80 >> b
            t[i] = r
        _REV = t
    return _REV


class SPIBus:
    # SPI mode 0, LSB first on the wire (UM0701-02 6.2.5). Give an SPI made with
    # firstbit=SPI.LSB, or lsb_first=False to have the driver reverse the bits itself.
    stream = False

    def __init__(self, spi, cs_pin, lsb_first=True):
        self._spi = spi
        self._cs = cs_pin
        self._rev = None if lsb_first else _reverse_table()
        self._op = bytearray(1)
        self._status = bytearray(1)
        self._scratch = bytearray(_TX_SIZE)
        self._smv = memoryview(self._scratch)
        cs_pin.value(1)

    def _send_op(self, op):
        self._op[0] = self._rev[op] if self._rev else op
        self._spi.write(self._op)

    def _reverse(self, mv, n):
        rev = self._rev
        for i in range(n):
            mv[i] = rev[mv[i]]

    def wakeup(self):
        self._cs.value(0)
        self._cs.value(1)

    def drain(self):
        pass

    def write(self, frame):
        n = len(frame)
        self._cs.value(0)
        try:
            self._send_op(_SPI_DW)
            if self._rev:
                out = self._smv[:n]
                out[:] = frame
                self._reverse(out, n)
                self._spi.write(out)
            else:
                self._spi.write(frame)
        finally:
            self._cs.value(1)

    def ready(self):
        self._cs.value(0)
        try:
            self._send_op(_SPI_SR)
            self._spi.readinto(self._status)
        finally:
            self._cs.value(1)
        s = self._status[0]
        if self._rev:
            s = self._rev[s]
        return s & 1

    def readinto(self, mv):
        n = len(mv)
        self._cs.value(0)
        try:
            self._send_op(_SPI_DR)
            self._spi.readinto(mv)
        finally:
            self._cs.value(1)
        if self._rev:
            self._reverse(mv, n)
        return n


def _build(tx, cmd, nparams):
    # Frames the command whose parameters already sit at tx[_PARAMS:]; returns (start, end).
    n = nparams + 2
    tx[8] = _HOST_TO_PN532
    tx[9] = cmd
    dcs = _HOST_TO_PN532 + cmd
    for i in range(_PARAMS, _PARAMS + nparams):
        dcs += tx[i]
    end = _PARAMS + nparams
    tx[end] = (-dcs) & 0xFF
    tx[end + 1] = 0
    if n <= 255:
        tx[3] = 0
        tx[4] = 0
        tx[5] = 0xFF
        tx[6] = n
        tx[7] = (-n) & 0xFF
        return 3, end + 2
    tx[0] = 0
    tx[1] = 0
    tx[2] = 0xFF
    tx[3] = 0xFF
    tx[4] = 0xFF
    tx[5] = n >> 8
    tx[6] = n & 0xFF
    tx[7] = (-(tx[5] + tx[6])) & 0xFF
    return 0, end + 2


class PN532:
    def __init__(self, bus, reset_pin=None, irq_pin=None, max_retries=2):
        self.bus = bus
        self.reset_pin = reset_pin
        self.irq_pin = irq_pin
        self.max_retries = max_retries  # InListPassiveTarget retries (0xFF = wait for a card)
        self._tx = bytearray(_TX_SIZE)
        self._txv = memoryview(self._tx)
        self._rx = bytearray(_RX_SIZE)
        self._rxv = memoryview(self._rx)
        self._s = 0  # parse position in _rx
        self._n = 0  # bytes held in _rx
        self._f_start = 0  # last data frame: offset of its first byte after TFI/CMD
        self._f_len = 0  # and its length
        # Last target found by poll_target(); buffers reused on every poll.
        self.uid = bytearray(10)
        self.uid_len = 0
        self.sak = 0
        self.atqa = 0
        self.ats = bytearray(64)
        self.ats_len = 0
        if reset_pin is not None:
            reset_pin.value(1)

    # ------------------------------------------------------------ frames

    def _parse(self):
        # Look for one frame in _rx[_s:_n]. Sets _f_start/_f_len for data frames.
        rx = self._rx
        s = self._s
        n = self._n
        while s + 1 < n and not (rx[s] == 0 and rx[s + 1] == 0xFF):
            s += 1
        self._s = s
        if n - s < 4:
            return _NEED
        a = rx[s + 2]
        b = rx[s + 3]
        if a == 0 and b == 0xFF:
            self._s = s + 4
            return _ACK
        if a == 0xFF and b == 0:
            self._s = s + 4
            return _NACK
        if a == 0xFF and b == 0xFF:
            if n - s < 7:
                return _NEED
            if (rx[s + 4] + rx[s + 5] + rx[s + 6]) & 0xFF:
                self._s = s + 2
                raise PN532FrameError("PN532 extended frame: bad length checksum")
            ln = rx[s + 4] << 8 | rx[s + 5]
            d = s + 7
        else:
            if (a + b) & 0xFF:
                self._s = s + 2
                raise PN532FrameError("PN532 frame: bad length checksum")
            ln = a
            d = s + 4
        if n - d < ln + 1:
            return _NEED
        if d + ln + 1 > _RX_SIZE:
            self._s = n
            raise PN532FrameError("PN532 frame too long: %d" % ln)
        total = rx[d + ln]
        for i in range(d, d + ln):
            total += rx[i]
        self._s = d + ln + 1
        if total & 0xFF:
            raise PN532FrameError("PN532 frame: bad data checksum")
        self._f_start = d
        self._f_len = ln
        return _DATA

    def _compact(self):
        s = self._s
        if s == 0:
            return
        rem = self._n - s
        if rem > 0:
            self._rxv[0:rem] = self._rxv[s:self._n]
        self._s = 0
        self._n = rem if rem > 0 else 0

    def _fill(self, expect):
        # Pull what the chip has; returns True if new bytes arrived.
        bus = self.bus
        if bus.stream:
            self._compact()
            if self._n >= _RX_SIZE:
                self._s = self._n = 0  # garbage flood: start over
            got = bus.readinto(self._rxv[self._n:])
            self._n += got
            return got > 0
        if self.irq_pin is not None and self.irq_pin.value():
            return False
        if not bus.ready():
            return False
        self._s = 0
        self._n = bus.readinto(self._rxv[:expect])
        return self._n > 0

    async def _wait(self, expect, start, timeout_ms):
        # Wait for one frame until timeout_ms after start; returns _ACK, _NACK or _DATA, raises
        # PN532Timeout. The deadline holds even while bytes keep coming: a babbling chip or a
        # noisy line cannot stretch it.
        late = ticks_diff(ticks_ms(), start) >= timeout_ms
        while True:
            kind = self._parse()
            if kind != _NEED:
                return kind
            if late:
                raise PN532Timeout("PN532 did not answer in %d ms" % timeout_ms)
            if not self.bus.stream:
                self._s = self._n = 0
            try:
                got = self._fill(expect)
            except OSError as e:
                raise PN532Error("PN532 bus error %d" % e.args[0])
            late = ticks_diff(ticks_ms(), start) >= timeout_ms  # what came in is parsed once more
            if not got and not late:
                await _sleep_ms(_POLL_MS)

    def _write(self, data):
        try:
            self.bus.write(data)
        except OSError as e:
            raise PN532Error("PN532 bus error %d" % e.args[0])

    async def _command(self, cmd, nparams, expect_len, timeout_ms):
        # Send a command whose parameters sit at _tx[_PARAMS:]; return the response length.
        # The response data (after D5 CMD+1) is at _rx[_f_start:_f_start + length].
        if nparams > _MAX_PARAMS:
            raise PN532Error("PN532 command too long: %d bytes" % nparams)
        a, b = _build(self._tx, cmd, nparams)
        self._s = self._n = 0
        try:
            self.bus.drain()
        except OSError as e:
            raise PN532Error("PN532 bus error %d" % e.args[0])
        self._write(self._txv[a:b])
        if await self._wait(6, ticks_ms(), _ACK_MS) != _ACK:
            raise PN532FrameError("PN532 sent no ACK for command 0x%02X" % cmd)
        if not self.bus.stream:
            self._s = self._n = 0
        expect = expect_len + 12  # status + header + TFI/CMD + DCS/postamble
        nacks = 0
        start = ticks_ms()  # one deadline for the response, however many stray frames come
        while True:
            try:
                kind = await self._wait(expect, start, timeout_ms)
            except PN532FrameError:
                if nacks >= 2:
                    raise
                nacks += 1
                self._s = self._n = 0
                self._write(_NACK_FRAME)  # ask for the response again
                continue
            except PN532Timeout:
                self._write(_ACK_FRAME)  # abort the command in the chip
                raise PN532Timeout("PN532 command 0x%02X: no response in %d ms" % (cmd, timeout_ms))
            if kind == _DATA:
                break
            # A stray ACK/NACK: keep waiting for the response, until the same deadline.
            await _sleep_ms(0)
        rx = self._rx
        d = self._f_start
        ln = self._f_len
        if ln == 1 and rx[d] == _ERROR_TFI:
            raise PN532StatusError(_ERROR_TFI, cmd)
        if ln < 2 or rx[d] != _PN532_TO_HOST or rx[d + 1] != cmd + 1:
            raise PN532FrameError("PN532 unexpected response to 0x%02X" % cmd)
        self._f_start = d + 2
        self._f_len = ln - 2
        return ln - 2

    # --------------------------------------------------------------- API

    async def begin(self):
        # Wake the chip, leave LowVbat (SAM normal mode), and bound InListPassiveTarget retries.
        self.bus.wakeup()
        await _sleep_ms(_WAKE_MS)
        tx = self._tx
        tx[_PARAMS] = 0x01  # normal mode: no SAM
        tx[_PARAMS + 1] = 0x14  # timeout 50 ms * 20 (virtual mode only)
        tx[_PARAMS + 2] = 0x01  # use the IRQ pin
        try:
            await self._command(_SAM_CONFIGURATION, 3, 0, 100)
        except PN532Error:
            # The first frame after a wake-up can be lost; one more try.
            self.bus.wakeup()
            await _sleep_ms(_WAKE_MS)
            tx[_PARAMS] = 0x01
            tx[_PARAMS + 1] = 0x14
            tx[_PARAMS + 2] = 0x01
            await self._command(_SAM_CONFIGURATION, 3, 0, 100)
        version = await self.firmware_version()
        if version[0] != 0x32:
            raise PN532Error("not a PN532: IC 0x%02X" % version[0])
        tx[_PARAMS] = 0x05  # MaxRetries
        tx[_PARAMS + 1] = 0xFF  # MxRtyATR (default)
        tx[_PARAMS + 2] = 0x01  # MxRtyPSL (default)
        tx[_PARAMS + 3] = self.max_retries  # MxRtyPassiveActivation
        await self._command(_RF_CONFIGURATION, 4, 0, 100)
        return version

    async def firmware_version(self):
        n = await self._command(_GET_FIRMWARE_VERSION, 0, 4, 100)
        if n != 4:
            raise PN532FrameError("PN532 GetFirmwareVersion: %d bytes" % n)
        rx = self._rx
        d = self._f_start
        return (rx[d], rx[d + 1], rx[d + 2], rx[d + 3])

    async def poll_target(self, timeout_ms=200):
        # InListPassiveTarget, 1 target, 106 kbps type A. Returns the UID length (0 = no card)
        # and fills self.uid/uid_len/sak/atqa/ats/ats_len without allocating.
        tx = self._tx
        tx[_PARAMS] = 0x01  # MaxTg
        tx[_PARAMS + 1] = 0x00  # BrTy 106 kbps type A
        n = await self._command(_IN_LIST_PASSIVE_TARGET, 2, 80, timeout_ms)
        rx = self._rx
        d = self._f_start
        if n < 1 or rx[d] == 0:
            self.uid_len = 0
            return 0
        # NbTg Tg SENS_RES(2) SEL_RES NFCIDLength NFCID1 [ATS]
        if n < 6:
            raise PN532FrameError("PN532 InListPassiveTarget: short answer")
        ulen = rx[d + 5]
        if ulen not in (4, 7, 10) or 6 + ulen > n:
            raise PN532FrameError("PN532 InListPassiveTarget: bad UID length %d" % ulen)
        self.atqa = rx[d + 2] << 8 | rx[d + 3]
        self.sak = rx[d + 4]
        self.uid[0:ulen] = self._rxv[d + 6:d + 6 + ulen]
        self.uid_len = ulen
        rest = n - 6 - ulen
        if rest > len(self.ats):
            rest = len(self.ats)
        if rest > 0:
            self.ats[0:rest] = self._rxv[d + 6 + ulen:d + 6 + ulen + rest]
        self.ats_len = rest if rest > 0 else 0
        return ulen

    async def read_target(self, timeout_ms=200):
        # -> (uid: bytes, sak: int, atqa: int, ats: bytes incl. its length byte) or None
        if not await self.poll_target(timeout_ms):
            return None
        return (bytes(self.uid[:self.uid_len]), self.sak, self.atqa, bytes(self.ats[:self.ats_len]))

    async def exchange(self, data, timeout_ms=500):
        # InDataExchange with target 1 (ISO-DEP: data is an APDU). Raises on status != 0.
        n = len(data)
        if n + 1 > _MAX_PARAMS:
            raise PN532Error("PN532 exchange too long: %d bytes" % n)
        self._tx[_PARAMS] = 0x01
        self._txv[_PARAMS + 1:_PARAMS + 1 + n] = data
        got = await self._command(_IN_DATA_EXCHANGE, n + 1, 264, timeout_ms)
        d = self._f_start
        if got < 1:
            raise PN532FrameError("PN532 InDataExchange: empty answer")
        status = self._rx[d] & 0x3F
        if status:
            raise PN532StatusError(status, _IN_DATA_EXCHANGE)
        return bytes(self._rx[d + 1:d + got])

    async def release(self):
        self._tx[_PARAMS] = 0x00  # all targets
        await self._command(_IN_RELEASE, 1, 1, 100)

    async def diagnose_line(self, data):
        # Communication line test: the chip echoes data; True when it came back intact.
        n = len(data)
        self._tx[_PARAMS] = 0x00
        self._txv[_PARAMS + 1:_PARAMS + 1 + n] = data
        got = await self._command(_DIAGNOSE, n + 1, n + 1, 200)
        d = self._f_start
        return got == n + 1 and self._rx[d] == 0 and bytes(self._rxv[d + 1:d + got]) == bytes(data)

    async def hard_reset(self):
        # Pulse RSTPDN low (if wired), wait for the chip to boot, then begin() again.
        if self.reset_pin is not None:
            self.reset_pin.value(0)
            await _sleep_ms(_RESET_LOW_MS)
            self.reset_pin.value(1)
            await _sleep_ms(_RESET_BOOT_MS)
        self._s = self._n = 0
        return await self.begin()
