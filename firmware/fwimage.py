# Runs on the ESP32 (and the unix port with the sim/mpy esp32 stand-in): writes a MicroPython firmware image received over the link into the next OTA app partition, checks it, and makes it boot once.
#
# Imported by update.py only for a firmware update (UPDATE_BEGIN kind 1). Chunk i goes to
# offset i * 192 of the partition esp32.Partition(RUNNING).get_next_update() returns; each
# 4 KiB block is erased when the first chunk reaching into it arrives (a chunk written again
# after a restart writes the same bytes). The chunks held are counted in upd/fw.dat. After
# the SHA-256 of the partition's first `size` bytes matched, set_boot() makes the boot loader
# start it once, on trial: main.py confirms it (mark_app_valid_cancel_rollback) once the app
# reached the host, or goes back to the partition it came from (fwtrial.dat says which).
import asyncio
import hashlib

import esp32

from main import TRIAL, write

_BLOCK = 4096
_CH = 192        # protocol/ota.py UPDATE_CHUNK_MAX
_PIECE = 512
_HAVE = "upd/fw.dat"
FW_TRIAL = "fwtrial.dat"


class Image:
    def __init__(self, size):
        self.run = esp32.Partition(esp32.Partition.RUNNING)
        self.part = self.run.get_next_update()
        if size > self.part.ioctl(4, 0) * self.part.ioctl(5, 0):
            raise OSError(28)  # ENOSPC: the image is larger than the partition
        self.erased = -1

    def held(self):
        # Chunks already written (0 for a new update); the block after them is erased again.
        try:
            with open(_HAVE) as fh:
                have = int(fh.read())
        except (OSError, ValueError):
            have = 0
        self.erased = (have * _CH - 1) // _BLOCK if have else -1
        return have

    def write(self, index, data, have):
        off = index * _CH
        last = (off + len(data) - 1) // _BLOCK
        while self.erased < last:
            self.erased += 1
            self.part.ioctl(6, self.erased)
        b = off // _BLOCK
        o = off % _BLOCK
        first = min(len(data), _BLOCK - o)
        self.part.writeblocks(b, data[:first], o)
        if first < len(data):
            self.part.writeblocks(b + 1, data[first:], 0)
        if have % 8 == 0:
            with open(_HAVE, "w") as fh:
                fh.write(str(have))

    async def check(self, size, sha):
        h = hashlib.sha256()
        buf = bytearray(_PIECE)
        off = 0
        while off < size:
            n = min(_PIECE, size - off)
            mv = memoryview(buf)[:n]
            self.part.readblocks(off // _BLOCK, mv, off % _BLOCK)
            h.update(mv)
            off += n
            await asyncio.sleep_ms(0)  # the tap path goes first
        return h.digest() == sha

    def boot(self, version):
        # The next boot starts the new image, on trial.
        write(FW_TRIAL, "%s %s %s" % (self.part.info()[4], self.run.info()[4], version))
        write(TRIAL, "0")
        self.part.set_boot()
