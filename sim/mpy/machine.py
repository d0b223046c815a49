# Runs on the MicroPython unix port only (tests, demo): stand-in for the ESP32 `machine` module, wired to sim/ emulators.
#
# Wiring is by environment variable (set by the test harness before starting micropython):
#   TAPKIOSK_SIM_UART<id> = tcp:127.0.0.1:PORT | /dev/pts/N   HSU byte stream (PN532Emulator.serve_tcp/serve_pty)
#   TAPKIOSK_SIM_I2C<id>  = tcp:127.0.0.1:PORT                 PN532Emulator.serve_bus
#   TAPKIOSK_SIM_SPI<id>  = tcp:127.0.0.1:PORT                 PN532Emulator.serve_bus (needs the ss pin wired)
#   TAPKIOSK_SIM_PIN<id>  = SIGNAL@tcp:127.0.0.1:PORT          pin tied to an emulator pin: rstpdn, ss (outputs), irq (input)
#   TAPKIOSK_SIM_PINS     = path                               every output change appended as "<ticks_ms> <pin> <value>"
#   TAPKIOSK_SIM_INPUTS   = path                               lines "<pin> <0|1>" drive input pins (last line wins)
#   TAPKIOSK_SIM_RESET_CAUSE, TAPKIOSK_SIM_UNIQUE_ID (hex)     what reset_cause() / unique_id() return
# ticks_ms in the log is CLOCK_MONOTONIC in ms (30 bits), the same clock as protocol.compat.ticks_ms on CPython.
# UART, I2C and SPI never block for long: UART.read/readinto/any poll the socket with timeout 0, so an
# asyncio task polls any() between awaits (as firmware/pn532.py does). A lost link reads as silence.
import os
import select
import socket
import sys
import time

from micropython import const

PWRON_RESET = const(1)
HARD_RESET = const(2)
WDT_RESET = const(3)
DEEPSLEEP_RESET = const(4)
SOFT_RESET = const(5)

_EXIT_RESET = const(75)  # machine.reset(): the harness restarts the firmware (= reboot)

_pins_log = os.getenv("TAPKIOSK_SIM_PINS")
_inputs = os.getenv("TAPKIOSK_SIM_INPUTS")


def _log(name, value):
    if not _pins_log:
        return
    with open(_pins_log, "a") as f:
        f.write("%d %s %s\n" % (time.ticks_ms(), name, value))


def _tcp_connect(spec):
    # spec "tcp:HOST:PORT" -> connected socket
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] != "tcp":
        raise ValueError("sim endpoint must be tcp:HOST:PORT, got %r" % spec)
    s = socket.socket()
    s.connect(socket.getaddrinfo(parts[1], int(parts[2]))[0][-1])
    return s


def _endpoint(kind, id):
    name = "TAPKIOSK_SIM_%s%s" % (kind, id)
    spec = os.getenv(name)
    if not spec:
        raise OSError(19, "%s(%s) is not wired: set %s" % (kind, id, name))
    return spec


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError(5, "sim bus closed")
        buf += chunk
    return buf


class _Bus:
    # One request/response connection to PN532Emulator.serve_bus (see sim/pn532.py).
    def __init__(self, spec):
        self._spec = spec
        self._sock = None

    def request(self, kind, payload):
        if self._sock is None:
            self._sock = _tcp_connect(self._spec)
        n = len(payload)
        try:
            self._sock.write(kind + bytes((n >> 8, n & 0xFF)) + payload)
            head = _recv_exact(self._sock, 2)
            return _recv_exact(self._sock, head[0] << 8 | head[1])
        except OSError:
            self._sock.close()
            self._sock = None
            raise


class UART:
    INV_TX = const(1)
    INV_RX = const(2)

    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, tx=None, rx=None,
                 timeout=0, timeout_char=0, rxbuf=256, txbuf=256, **kw):
        self._id = id
        self._spec = _endpoint("UART", id)
        self._rx = bytearray()
        self._sock = None
        self._file = None
        self._poll = select.poll()
        self.init(baudrate, bits, parity, stop, timeout=timeout)
        if self._spec.startswith("tcp:"):
            self._sock = _tcp_connect(self._spec)
            self._poll.register(self._sock, select.POLLIN)
        else:
            import termios

            self._file = open(self._spec, "r+b")
            termios.setraw(self._file.fileno())
            self._poll.register(self._file, select.POLLIN)

    def init(self, baudrate=115200, bits=8, parity=None, stop=1, **kw):
        self.baudrate = baudrate
        self._timeout = kw.get("timeout", 0)

    def deinit(self):
        if self._sock is not None:
            self._sock.close()
        if self._file is not None:
            self._file.close()

    def _pull(self):
        while self._poll.poll(0):
            if self._sock is not None:
                try:
                    chunk = self._sock.recv(512)
                except OSError:
                    return
            else:
                chunk = self._file.read(1)  # a pty read must not ask for more than is there
            if not chunk:
                self._poll.unregister(self._sock or self._file)
                return
            self._rx.extend(chunk)

    def _wait(self):
        if self._timeout and not self._rx:
            self._poll.poll(self._timeout)

    def any(self):
        self._pull()
        return len(self._rx)

    def read(self, n=-1):
        self._wait()
        self._pull()
        if not self._rx:
            return None
        if n is None or n < 0 or n > len(self._rx):
            n = len(self._rx)
        out = bytes(self._rx[:n])
        self._rx = self._rx[n:]
        return out

    def readinto(self, buf, nbytes=-1):
        self._wait()
        self._pull()
        n = len(buf) if nbytes is None or nbytes < 0 else nbytes
        n = min(n, len(self._rx))
        if not n:
            return None
        buf[:n] = self._rx[:n]
        self._rx = self._rx[n:]
        return n

    def readline(self):
        self._pull()
        i = self._rx.find(b"\n")
        if i < 0:
            return None
        return self.read(i + 1)

    def write(self, buf):
        data = bytes(buf)
        try:
            if self._sock is not None:
                self._sock.write(data)
            else:
                self._file.write(data)
                self._file.flush()
        except OSError:
            pass  # like a loose wire: the bytes go nowhere
        return len(data)

    def flush(self):
        pass

    def txdone(self):
        return True


class I2C:
    def __init__(self, id=0, scl=None, sda=None, freq=400000, timeout=50000):
        self._bus = _Bus(_endpoint("I2C", id))
        self.freq = freq

    def writeto(self, addr, buf, stop=True):
        if self._bus.request(b"W", bytes((addr,)) + bytes(buf)) != b"\x01":
            raise OSError(19, "I2C address 0x%02x: NACK" % addr)
        return len(buf)

    def readfrom_into(self, addr, buf, stop=True):
        n = len(buf)
        got = self._bus.request(b"R", bytes((addr, n >> 8, n & 0xFF)))
        if len(got) != n:
            raise OSError(19, "I2C address 0x%02x: NACK" % addr)
        buf[:] = got

    def readfrom(self, addr, nbytes, stop=True):
        buf = bytearray(nbytes)
        self.readfrom_into(addr, buf)
        return bytes(buf)

    def scan(self):
        found = []
        for addr in range(0x08, 0x78):
            if self._bus.request(b"W", bytes((addr,))) == b"\x01":
                found.append(addr)
        return found


def _reverse_table():
    t = bytearray(256)
    for i in range(256):
        r = 0
        for b in range(8):
            if i & (1 << b):
                r |= 0x80 >> b
        t[i] = r
    return bytes(t)


_REV = _reverse_table()


class SPI:
    MSB = const(0)
    LSB = const(1)

    def __init__(self, id, baudrate=1000000, polarity=0, phase=0, bits=8, firstbit=0,
                 sck=None, mosi=None, miso=None):
        self._bus = _Bus(_endpoint("SPI", id))
        self.init(baudrate, polarity, phase, bits, firstbit)

    def init(self, baudrate=1000000, polarity=0, phase=0, bits=8, firstbit=0, **kw):
        self.baudrate = baudrate
        self.firstbit = firstbit

    def deinit(self):
        pass

    def _wire(self, data):
        # The chip reads bits LSB first: with MSB-first clocking it sees each byte reversed.
        if self.firstbit == SPI.LSB:
            return bytes(data)
        return bytes(_REV[b] for b in data)

    def _xfer(self, out):
        return self._wire(self._bus.request(b"X", self._wire(out)))

    def write(self, buf):
        self._xfer(buf)

    def read(self, nbytes, write=0x00):
        return self._xfer(bytes((write,)) * nbytes)

    def readinto(self, buf, write=0x00):
        buf[:] = self._xfer(bytes((write,)) * len(buf))

    def write_readinto(self, write_buf, read_buf):
        read_buf[:] = self._xfer(write_buf)


class Pin:
    IN = const(1)
    OUT = const(3)
    OPEN_DRAIN = const(7)
    PULL_UP = const(2)
    PULL_DOWN = const(1)
    IRQ_RISING = const(1)
    IRQ_FALLING = const(2)

    def __init__(self, id, mode=-1, pull=-1, value=None, **kw):
        self._id = id
        self._v = None
        self._mode = mode
        self._signal = None
        self._bus = None
        spec = os.getenv("TAPKIOSK_SIM_PIN%s" % id)
        if spec:
            if "@" not in spec:
                raise ValueError("TAPKIOSK_SIM_PIN%s must be SIGNAL@tcp:HOST:PORT" % id)
            self._signal, where = spec.split("@", 1)
            self._bus = _Bus(where)
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None, **kw):
        if mode != -1:
            self._mode = mode
        if value is not None:
            self.value(value)

    def _input(self):
        if self._bus is not None and self._signal == "irq":
            return self._bus.request(b"Q", b"irq")[0]
        level = 0
        if _inputs:
            try:
                with open(_inputs) as f:
                    for line in f:
                        words = line.split()
                        if len(words) == 2 and words[0] == str(self._id):
                            level = 1 if words[1] == "1" else 0
            except OSError:
                pass
        return level

    def value(self, v=None):
        if v is None:
            if self._mode == Pin.IN:
                return self._input()
            return self._v or 0
        v = 1 if v else 0
        if v == self._v:
            return None
        self._v = v
        if self._signal != "ss":  # chip-select toggles are bus traffic, not events
            _log(self._id, v)
        if self._bus is not None:
            self._bus.request(b"P", bytes((v,)) + self._signal.encode())
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3, **kw):
        return None  # no interrupts on the unix port; poll value() instead

    def __repr__(self):
        return "Pin(%s)" % self._id


class PWM:
    def __init__(self, pin, freq=1000, duty_u16=0, **kw):
        self._name = "pwm%s" % (pin._id if isinstance(pin, Pin) else pin)
        self._freq = freq
        self._duty = None
        self.duty_u16(duty_u16)

    def freq(self, f=None):
        if f is None:
            return self._freq
        self._freq = f
        return None

    def duty_u16(self, d=None):
        if d is None:
            return self._duty or 0
        if d != self._duty:
            self._duty = d
            _log(self._name, d)
        return None

    def duty(self, d=None):
        if d is None:
            return (self._duty or 0) >> 6
        self.duty_u16(d << 6)
        return None

    def deinit(self):
        self.duty_u16(0)


_wdt = [0, 0, None]  # last feed (ticks_ms), timeout (ms), message


def _wdt_watch():
    # Runs in its own thread: no allocation until the reset itself.
    while True:
        time.sleep_ms(20)
        if time.ticks_diff(time.ticks_ms(), _wdt[0]) > _wdt[1]:
            sys.stderr.write(_wdt[2])
            _log("wdt", "reset")
            # Like the hardware watchdog: the whole process goes, whatever it was doing.
            os.system("kill -KILL $PPID")
            return


class WDT:
    # Not fed within timeout ms: "WDT reset" on stderr, a "wdt reset" line in the pins log and
    # the process is killed (SIGKILL, returncode -9), whatever the firmware was doing.
    def __init__(self, id=0, timeout=5000):
        import _thread

        first = _wdt[2] is None
        _wdt[0] = time.ticks_ms()
        _wdt[1] = timeout
        _wdt[2] = "WDT reset: not fed for %d ms\n" % timeout
        _log("wdt", "start")
        if first:
            _thread.start_new_thread(_wdt_watch, ())

    def feed(self):
        _wdt[0] = time.ticks_ms()
        _log("wdt", "feed")


def reset():
    sys.stderr.write("machine.reset()\n")
    sys.exit(_EXIT_RESET)


def soft_reset():
    reset()


def reset_cause():
    cause = os.getenv("TAPKIOSK_SIM_RESET_CAUSE")
    return int(cause) if cause else PWRON_RESET


def unique_id():
    uid = os.getenv("TAPKIOSK_SIM_UNIQUE_ID")
    if uid:
        return bytes.fromhex(uid)
    return b"\x24\x0a\xc4\x00\x00\x01"


def freq(hz=None):
    return 240000000 if hz is None else None


def idle():
    time.sleep_ms(1)


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


def lightsleep(ms=0):
    time.sleep_ms(ms)


def deepsleep(ms=0):
    reset()
