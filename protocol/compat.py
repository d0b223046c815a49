# Runs on both CPython and MicroPython: the one place that papers over their differences.
import asyncio
import sys
import time

IS_MICROPYTHON = sys.implementation.name == "micropython"

if IS_MICROPYTHON:
    from micropython import const  # noqa: F401

    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
    sleep_ms = asyncio.sleep_ms  # a coroutine: await sleep_ms(n)
else:
    _TICKS_PERIOD = 1 << 30
    _TICKS_HALF = _TICKS_PERIOD // 2

    def const(value):
        return value

    def sleep_ms(ms):
        return asyncio.sleep(ms / 1000)

    def ticks_ms():
        return int(time.monotonic() * 1000) & (_TICKS_PERIOD - 1)

    def ticks_add(ticks, delta):
        return (ticks + delta) & (_TICKS_PERIOD - 1)

    def ticks_diff(end, start):
        # Same wrap-around semantics as MicroPython's time.ticks_diff.
        return ((end - start + _TICKS_HALF) & (_TICKS_PERIOD - 1)) - _TICKS_HALF
