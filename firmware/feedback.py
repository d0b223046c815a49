# Runs on the ESP32 (and the unix port in tests): LED, buzzer, relay and display feedback for a tap.
#
# Two long-lived tasks (no task per tap): one plays the LED/buzzer pattern, one pulses the relay.
# show() only stores the request and sets an Event. Patterns are protocol/codes.py PAT_*.
# Under the unix port the display is stdout: "DISPLAY: <text>".
import asyncio

from protocol.compat import const, ticks_diff, ticks_ms

_STEP_MS = const(20)  # how often a running pattern checks for a newer one

# Steps, two bytes each: LEDs and buzzer (bit0 red, bit1 green, bit2 buzzer), then the step's
# length in units of 20 ms. The last step's LEDs go off after it. Bytes, not tuples: ~500 bytes
# less heap.
_PATTERNS = (
    b"",                                          # PAT_NONE
    b"\x06\x06\x02\x2c",                          # PAT_GRANT: green, short beep
    b"\x05\x1e\x01\x14",                          # PAT_DENY: red, long beep
    b"\x06\x04\x00\x04\x06\x04\x00\x04\x02\x22",      # PAT_OFFLINE_GRANT: two green beeps
    b"\x05\x04\x00\x04\x05\x04\x00\x04\x05\x04\x00\x04\x01\x1a",  # PAT_OFFLINE_DENY: three red beeps
    b"\x03\x4b",                                  # PAT_FAULT: amber
    b"\x02\x19",                                  # PAT_SALE: green 0.5 s (sale.py repeats it)
)


class Feedback:
    def __init__(self, machine, pins):
        # pins: config feedback section {relay, relay_active, led_r, led_g, buzzer} (None = absent).
        self._active = pins.get("relay_active", 1)
        self.relay = self._out(machine, pins.get("relay"), 1 - self._active)
        self.led_r = self._out(machine, pins.get("led_r"), 0)
        self.led_g = self._out(machine, pins.get("led_g"), 0)
        self.buzzer = self._out(machine, pins.get("buzzer"), 0)
        self._pat = 0
        self._pat_ev = asyncio.Event()
        self._relay_ms = 0
        self._relay_ev = asyncio.Event()
        self.pattern = 0     # last pattern shown (for tests and the bench)
        self.display = True  # print DISPLAY lines
        self.alive = ticks_ms()

    def _out(self, machine, num, level):
        if num is None or machine is None:
            return None
        p = machine.Pin(num, machine.Pin.OUT)
        p.value(level)
        return p

    def _set(self, pin, v):
        if pin is not None:
            pin.value(v)

    def show(self, pattern, relay_ms=0, text=None):
        if 0 <= pattern < len(_PATTERNS):
            self._pat = pattern
            self.pattern = pattern
            self._pat_ev.set()
        if relay_ms > 0 and self.relay is not None:
            self._relay_ms = relay_ms
            self._relay_ev.set()
        if text and self.display:
            print("DISPLAY:", text)

    async def run_pattern(self):
        ev = self._pat_ev
        while True:
            await ev.wait()
            ev.clear()
            self.alive = ticks_ms()
            steps = _PATTERNS[self._pat]
            for k in range(0, len(steps), 2):
                on = steps[k]
                self._set(self.led_r, on & 1)
                self._set(self.led_g, (on >> 1) & 1)
                self._set(self.buzzer, (on >> 2) & 1)
                ms = steps[k + 1] * _STEP_MS
                t0 = ticks_ms()
                while ticks_diff(ticks_ms(), t0) < ms and not ev.is_set():
                    await asyncio.sleep_ms(_STEP_MS)
                if ev.is_set():
                    break
            if not ev.is_set():
                self._set(self.led_r, 0)
                self._set(self.led_g, 0)
                self._set(self.buzzer, 0)

    async def run_relay(self):
        ev = self._relay_ev
        while True:
            await ev.wait()
            ev.clear()
            self.alive = ticks_ms()
            ms = self._relay_ms
            self.relay.value(self._active)
            # A second grant while open extends the pulse from now.
            t0 = ticks_ms()
            while True:
                left = ms - ticks_diff(ticks_ms(), t0)
                if left <= 0:
                    break
                await asyncio.sleep_ms(left if left < _STEP_MS else _STEP_MS)
                if ev.is_set():
                    ev.clear()
                    ms = self._relay_ms
                    t0 = ticks_ms()
            self.relay.value(1 - self._active)

    def tasks(self):
        out = [asyncio.create_task(self.run_pattern())]
        if self.relay is not None:
            out.append(asyncio.create_task(self.run_relay()))
        return out

