# Runs under the MicroPython unix port (simulator): a stand-in for the esp32 module's OTA partitions, backed by files in the board directory.
#
# Two app partitions, ota_0 and ota_1 (files ota_0.bin, ota_1.bin of SIZE bytes), and the
# boot loader's choice in otadata.txt: "<boot label> <state>", with the ESP-IDF rollback
# states: new (set_boot just chose it), pending (it was started and not yet marked valid),
# valid. What the boot loader does runs when this module is first imported (the boot stub
# imports it before the app): a `new` partition starts as `pending`; a `pending` one that was
# started once and never marked valid is abandoned: the other partition boots again (as
# CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE does). The unix port always runs the same binary, so
# an image is only bytes here; one whose first bytes are b"\xe9CRASH" stands for a firmware
# that resets before it reaches Python: the stand-in resets (exit 75) while it is pending.
import os
import sys

SIZE = 0x40000
BLOCK = 4096
_LABELS = ("ota_0", "ota_1")
_DATA = "otadata.txt"


def _read_otadata():
    try:
        with open(_DATA) as fh:
            label, state = fh.read().split()
            return label, state
    except (OSError, ValueError):
        return "ota_0", "valid"


def _write_otadata(label, state):
    with open(_DATA, "w") as fh:
        fh.write("%s %s" % (label, state))


def _boot():
    label, state = _read_otadata()
    if state == "pending":
        # Started before and never marked valid: the boot loader goes back to the other one.
        label = _LABELS[1 - _LABELS.index(label)]
        sys.stderr.write("esp32 stand-in: rollback to %s\n" % label)
        _write_otadata(label, "valid")
        return label
    if state == "new":
        _write_otadata(label, "pending")
        try:
            with open(label + ".bin", "rb") as fh:
                crash = fh.read(6) == b"\xe9CRASH"
        except OSError:
            crash = False
        if crash:
            sys.stderr.write("esp32 stand-in: %s resets at start\n" % label)
            sys.exit(75)
    return label


_running = _boot()


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=BLOCK):
        if id == Partition.RUNNING:
            id = _running
        elif id == Partition.BOOT:
            id = _read_otadata()[0]
        if id not in _LABELS:
            raise ValueError("partition not found")
        self.label = id
        self.path = id + ".bin"
        try:
            os.stat(self.path)
        except OSError:
            with open(self.path, "wb") as fh:
                fh.write(b"\xff" * SIZE)

    def info(self):
        return (0, 0x10 + _LABELS.index(self.label), 0x10000 + _LABELS.index(self.label) * SIZE,
                SIZE, self.label, False)

    def readblocks(self, block_num, buf, offset=0):
        with open(self.path, "rb") as fh:
            fh.seek(block_num * BLOCK + offset)
            fh.readinto(buf)

    def writeblocks(self, block_num, buf, offset=None):
        if offset is None:
            self.ioctl(6, block_num)
            offset = 0
        with open(self.path, "r+b") as fh:
            fh.seek(block_num * BLOCK + offset)
            old = fh.read(len(buf))
            # NOR flash: a write only clears bits (an unerased block keeps its ones cleared).
            new = bytes(a & b for a, b in zip(old, bytes(buf)))
            fh.seek(block_num * BLOCK + offset)
            fh.write(new)

    def ioctl(self, op, arg):
        if op == 4:
            return SIZE // BLOCK
        if op == 5:
            return BLOCK
        if op == 6:
            with open(self.path, "r+b") as fh:
                fh.seek(arg * BLOCK)
                fh.write(b"\xff" * BLOCK)
            return 0
        return None

    def set_boot(self):
        _write_otadata(self.label, "new")

    def get_next_update(self):
        return Partition(_LABELS[1 - _LABELS.index(self.label)])

    @staticmethod
    def mark_app_valid_cancel_rollback():
        label, state = _read_otadata()
        if label == _running and state == "pending":
            _write_otadata(label, "valid")
