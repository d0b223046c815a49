# Runs on the ESP32 (MicroPython) and on CPython for tests: card poll loop with debounce and PN532 supervision.
#
# Reader(chip).run(on_tap) polls the PN532 every poll_ms. A card held on the reader is one tap;
# it can tap again once it has been away for debounce_ms (another card taps at once).
# Supervision: GetFirmwareVersion every probe_ms and after every error; after max_failures
# consecutive failures the reset pin is pulsed (chip.hard_reset()) and on_fault is called;
# on_recovered(resets) when the chip answers again. PN532s hang in the field: this is why.
#
# Callbacks (plain functions or coroutines):
#   on_tap(uid: bytes, sak: int, atqa: int, secure)      secure = secure_hook result or None
#   secure_hook(chip, uid: bytes, sak: int, ats: bytes)   ISO-DEP cards only, before on_tap
#   on_fault(kind: str, count: int, text: str)            kind: timeout|frame|status|bus|chip
#   on_recovered(resets: int)

from protocol.compat import const, sleep_ms, ticks_diff, ticks_ms
from pn532 import PN532FrameError, PN532StatusError, PN532Timeout, PN532Error

_MAX_BACKOFF_MS = const(5000)


def _kind(e):
    if isinstance(e, PN532Timeout):
        return "timeout"
    if isinstance(e, PN532StatusError):
        return "status"
    if isinstance(e, PN532FrameError):
        return "frame"
    if isinstance(e, PN532Error):
        return "chip"
    return "bus"


async def _call(fn, *args):
    if fn is None:
        return None
    r = fn(*args)
    if r is not None and hasattr(r, "send"):  # a coroutine (MicroPython: a generator)
        r = await r
    return r


class Reader:
    def __init__(self, chip, poll_ms=100, debounce_ms=800, probe_ms=10000, max_failures=3,
                 read_timeout_ms=200, secure_hook=None, on_fault=None, on_recovered=None):
        self.chip = chip
        self.poll_ms = poll_ms
        self.debounce_ms = debounce_ms
        self.probe_ms = probe_ms
        self.max_failures = max_failures
        self.read_timeout_ms = read_timeout_ms
        self.secure_hook = secure_hook
        self.on_fault = on_fault
        self.on_recovered = on_recovered
        self.failures = 0  # consecutive failed chip commands
        self.resets = 0  # reset pulses in the current fault episode
        self.faulted = False  # on_fault was called and on_recovered not yet
        self.taps = 0
        self.version = None
        self._last = bytearray(10)  # card on the reader (debounce)
        self._last_len = 0
        self._last_seen = 0
        self._probe_at = 0
        self._ready = False  # begin() succeeded since the last reset
        self._running = False

    def stop(self):
        self._running = False

    def _same_card(self):
        chip = self.chip
        n = chip.uid_len
        if n != self._last_len:
            return False
        last = self._last
        uid = chip.uid
        for i in range(n):
            if last[i] != uid[i]:
                return False
        return True

    async def _failed(self, e):
        self.failures += 1
        self._ready = False
        if self.failures < self.max_failures:
            return
        if self.failures % self.max_failures == 0:  # every max_failures: one more reset
            self.resets += 1
            self.faulted = True
            await _call(self.on_fault, _kind(e), self.failures, str(e))
            try:
                self.version = await self.chip.hard_reset()
                self._ready = True
            except PN532Error:
                pass
            except OSError:
                pass

    async def _ok(self):
        if self.faulted:
            resets = self.resets
            self.faulted = False
            self.resets = 0
            self.failures = 0
            await _call(self.on_recovered, resets)
        self.failures = 0

    async def _probe(self):
        if not self._ready:
            self.version = await self.chip.begin()
            self._ready = True
        else:
            self.version = await self.chip.firmware_version()
        self._probe_at = ticks_ms()

    async def _poll_once(self, on_tap):
        chip = self.chip
        now = ticks_ms()
        if not self._ready or self.failures or ticks_diff(now, self._probe_at) >= self.probe_ms:
            await self._probe()
        n = await chip.poll_target(self.read_timeout_ms)
        now = ticks_ms()
        if n == 0:
            if self._last_len and ticks_diff(now, self._last_seen) >= self.debounce_ms:
                self._last_len = 0
            return
        if self._same_card():
            self._last_seen = now
            return
        # A new card: remember it first so a failing hook cannot make it tap twice.
        self._last[0:n] = chip.uid[0:n]
        self._last_len = n
        self._last_seen = now
        uid = bytes(chip.uid[0:n])
        sak = chip.sak
        atqa = chip.atqa
        secure = None
        if sak & 0x20 and self.secure_hook is not None:
            ats = bytes(chip.ats[0:chip.ats_len])
            try:
                secure = await _call(self.secure_hook, chip, uid, sak, ats)
            except PN532Error:
                secure = None  # card left mid-read or refused: report the UID alone
        self.taps += 1
        await _call(on_tap, uid, sak, atqa, secure)

    async def run(self, on_tap):
        self._running = True
        while self._running:
            try:
                await self._poll_once(on_tap)
            except (PN532Error, OSError) as e:
                await self._failed(e)
            else:
                await self._ok()
            wait = self.poll_ms
            if self.failures >= self.max_failures:
                wait = self.poll_ms * self.failures
                if wait > _MAX_BACKOFF_MS:
                    wait = _MAX_BACKOFF_MS
            await sleep_ms(wait)
