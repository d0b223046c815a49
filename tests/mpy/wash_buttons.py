# Runs under the MicroPython unix port (tests/test_firmware_sale.py; by hand: TAPKIOSK_SIM_INPUTS=in.txt MICROPYPATH=sim/mpy:firmware:. micropython tests/mpy/wash_buttons.py ): program buttons are debounced and checked in config.json.
import os

import config as C
import machine
from buttons import Buttons

INPUTS = os.getenv("TAPKIOSK_SIM_INPUTS")


def level(pin32, pin33):
    with open(INPUTS, "w") as f:
        f.write("32 %d\n33 %d\n" % (pin32, pin33))


pressed = []
level(1, 1)                                   # idle: pulled up
b = Buttons(machine, [(1, 32), (2, 33)], 0, pressed.append)
for _ in range(5):
    b.poll()
level(0, 1)                                   # a 2-poll glitch on program 1: ignored
b.poll()
b.poll()
level(1, 1)
b.poll()
b.poll()
print("GLITCH", pressed)
level(1, 0)                                   # program 2 held: one press, however long
for _ in range(10):
    b.poll()
print("HELD", pressed)
level(1, 1)
for _ in range(4):
    b.poll()
level(1, 0)
for _ in range(4):
    b.poll()
print("AGAIN", pressed, b.presses)

base = {"device_id": "wash-1", "kind": "wash", "key": "00" * 32, "link": "serial",
        "serial": {"uart": 2}, "reader": {"bus": "hsu"}}
cfg = dict(base, buttons={"pins": {"1": 32, "2": 33}})
c = C.check(cfg)
print("CONFIG", c.buttons, c.buttons_active)
for name, bad in (("gate", dict(base, kind="gate", buttons={"pins": {"1": 32}})),
                  ("code", dict(base, buttons={"pins": {"0": 32}})),
                  ("twice", dict(base, buttons={"pins": {"1": 32, "2": 32}})),
                  ("pin", dict(base, buttons={"pins": {"1": 99}}))):
    try:
        C.check(bad)
        print("BAD", name, "accepted")
    except C.ConfigError as e:
        print("BAD", name, e)
