# Runs on both CPython and MicroPython: frame sequence numbers, boot << 16 | counter.
#
# Rules (protocol/README.md, "Sequence numbers"):
# - a seq is a u32: the sender's boot number (persisted once per boot) in the high 16 bits and
#   a counter within that boot in the low 16 bits; counter 0 is never sent;
# - after counter CTR_MAX the sender takes the next boot number (one more persisted write) and
#   counts from 1 again;
# - boot numbers run 1..BOOT_MAX and next_boot() wraps BOOT_MAX to 1.
# Pure integer arithmetic, no allocation (a 32-bit MicroPython keeps seqs below 2**30 small).
from protocol.compat import const

CTR_MAX = const(0xFFFF)
BOOT_MAX = const(0xFFFF)


def make(boot, ctr):
    # The seq of frame `ctr` in boot `boot`.
    return ((boot & 0xFFFF) << 16) | (ctr & 0xFFFF)


def boot_of(seq):
    return (seq >> 16) & 0xFFFF


def ctr_of(seq):
    return seq & 0xFFFF


def next_boot(boot):
    # The boot number after `boot` (1..BOOT_MAX, wrapping).
    return boot % BOOT_MAX + 1
