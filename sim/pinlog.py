# Runs on CPython (tests, demo): reads the pin log the MicroPython `machine` stand-in writes.
"""Parse ``TAPKIOSK_SIM_PINS`` files: one ``"<ticks_ms> <pin> <value>"`` line per output change.

``<pin>`` is the id given to ``machine.Pin`` (``"4"``), ``pwm<id>`` for PWM duty (u16),
``np<id>`` for NeoPixel writes (hex RGB per pixel) and ``wdt`` (start/feed/reset).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class PinEvent(NamedTuple):
    ticks_ms: int
    pin: str
    value: str


def read_events(path: str | Path) -> list[PinEvent]:
    """All events in the file, oldest first (missing file = no events)."""
    p = Path(path)
    if not p.exists():
        return []
    events = []
    for line in p.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            events.append(PinEvent(int(parts[0]), parts[1], parts[2]))
    return events


def levels(events: list[PinEvent], pin: str | int) -> list[int]:
    """Successive levels written to one digital pin."""
    return [int(e.value) for e in events if e.pin == str(pin) and e.value in ("0", "1")]


def pulses(events: list[PinEvent], pin: str | int, active: int = 1) -> list[int]:
    """Durations in ms of the completed pulses at level ``active`` on ``pin``."""
    out, start = [], None
    for e in events:
        if e.pin != str(pin) or e.value not in ("0", "1"):
            continue
        if int(e.value) == active and start is None:
            start = e.ticks_ms
        elif int(e.value) != active and start is not None:
            out.append((e.ticks_ms - start) & ((1 << 30) - 1))
            start = None
    return out
