# Runs on the ESP32 (and the unix port in tests): a wash bay's program buttons — GPIO inputs, debounced.
#
# config.json "buttons": {"pins": {"1": 32, "2": 33}, "active": 0} (a button pulls its GPIO to
# the active level; 0: wired to GND, with the internal pull-up). A press held for _STABLE polls
# selects the program: the next TAP carries it as its service code, and the host is told
# (EVENT button, value = program) so it arms the program's sale and the display shows the
# program and its price from the policy (sale.py). Pins are read every _POLL_MS by one task;
# nothing is allocated after __init__.
import asyncio

from protocol.compat import const

_POLL_MS = const(20)
_STABLE = const(3)     # 3 polls: a press must hold 60 ms
_EV_BUTTON = const(8)


class Buttons:
    def __init__(self, machine, pins, active, on_press):
        pull = machine.Pin.PULL_UP if active == 0 else machine.Pin.PULL_DOWN
        self._pins = [machine.Pin(gpio, machine.Pin.IN, pull) for _, gpio in pins]
        self._codes = bytes(code for code, _ in pins)
        self._active = active
        self._state = bytearray(len(pins))   # 1 = pressed (debounced)
        self._count = bytearray(len(pins))
        self._on_press = on_press
        self.presses = 0

    def poll(self):
        # One debounce step for every button; calls on_press(program) on a new press.
        for i in range(len(self._pins)):
            down = 1 if self._pins[i].value() == self._active else 0
            if down == self._state[i]:
                self._count[i] = 0
                continue
            self._count[i] += 1
            if self._count[i] >= _STABLE:
                self._state[i] = down
                self._count[i] = 0
                if down:
                    self.presses += 1
                    self._on_press(self._codes[i])

    async def run(self):
        while True:
            self.poll()
            await asyncio.sleep_ms(_POLL_MS)


def program_pressed(app, code):
    # The bay's choice: the next TAP carries it; the host arms its sale and shows its price.
    app.tap_path.program = code
    app.event(_EV_BUTTON, code, "")
