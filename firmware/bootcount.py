# Runs on the ESP32 (and the unix port in tests): the boot counter in boot.dat (u16 boot number | 4-byte key tag), read and bumped once per boot.
#
# config.next_boot() imports this module for one call and drops it again (boot-time code).
import hashlib
import struct

from protocol.compat import const

from config import replace_file

# protocol/seq.py BOOT_MAX (that module is not loaded on the board); tests/test_firmware_codes.py
# checks it.
_BOOT_MAX = const(0xFFFF)


def _key_tag(key):
    # Which key a boot count belongs to: 4 bytes of SHA-256(key) (the key itself is on flash anyway).
    return hashlib.sha256(key).digest()[:4]


def _read_boot(path, tag):
    # The boot number in `path` if it belongs to this key's epoch, else 0. boot.dat is u16 boot
    # | 4-byte key tag; an older 2-byte file counts for any key.
    try:
        with open(path, "rb") as fh:
            raw = fh.read(6)
    except OSError:
        return 0
    if len(raw) == 2 or (len(raw) == 6 and (tag is None or raw[2:] == tag)):
        return struct.unpack(">H", raw[:2])[0]
    return 0


def next_boot(path, key=None):
    # Reads, increments and writes the boot counter: called once per boot (and again only if
    # the 16-bit per-boot counter runs out). 1..BOOT_MAX, never 0, so seq 0 never exists.
    # Never wraps (the host would refuse every seq of a wrapped count as a replay): once BOOT_MAX
    # is used up it returns 0 and writes nothing; the board then parks in a FAULT. A new key
    # (the host's `device replace`, provisioned again) starts a new epoch: the count restarts at
    # 1, and the host starts that device's seqs afresh with the key.
    # The new number goes to a temporary file that then replaces boot.dat, and both are read:
    # a power cut mid-write leaves the old or the new number. (Truncating boot.dat in place
    # could leave it empty: the count would restart at 1, every seq would fall below what the
    # host accepted, and the host would refuse the device as a replay.)
    tag = _key_tag(key) if key else None
    tmp = path + ".tmp"
    n = _read_boot(path, tag)
    t = _read_boot(tmp, tag)
    if t > n:
        n = t
    if n >= _BOOT_MAX:
        return 0
    n += 1
    with open(tmp, "wb") as fh:
        fh.write(struct.pack(">H", n))
        if tag is not None:
            fh.write(tag)
    replace_file(tmp, path)
    return n


