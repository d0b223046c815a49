# Runs on both CPython and MicroPython: the tapkiosk wire protocol (pure encode/decode, no I/O).
