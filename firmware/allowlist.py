# Runs on the ESP32 (and the unix port in tests): the offline allow-list of a gate, kept in allow.bin on flash.
#
# Records of u8 length + 10 bytes of UID in one bytearray, linear search (offline path only).
# Pushed by the host in CONFIG frames (allow_op: 0 keep, 1 replace, 2 add, 3 remove). Only gates
# import this module.
from protocol.compat import const

from config import replace_file

ALLOW_FILE = "allow.bin"
ALLOW_MAX = const(1000)  # UIDs kept for offline gate mode
_ALLOW_REC = const(11)   # u8 length + 10 bytes


class AllowList:
    def __init__(self, path=ALLOW_FILE):
        self.path = path
        self._buf = bytearray(0)
        self.count = 0
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
            n = len(raw) // _ALLOW_REC
            if n > ALLOW_MAX:
                n = ALLOW_MAX
            self._buf = bytearray(raw[:n * _ALLOW_REC])
            self.count = n
        except OSError:
            pass

    def _find(self, uid):
        b = self._buf
        ul = len(uid)
        for i in range(self.count):
            o = i * _ALLOW_REC
            if b[o] != ul:
                continue
            j = 0
            while j < ul and b[o + 1 + j] == uid[j]:
                j += 1
            if j == ul:
                return i
        return -1

    def __contains__(self, uid):
        return self._find(uid) >= 0

    def apply(self, op, uids):
        # op: 0 keep, 1 replace, 2 add, 3 remove (protocol.packet.ALLOW_*). Returns True if changed.
        if op == 0:
            return False
        if op == 1:
            self._buf = bytearray(0)
            self.count = 0
        for uid in uids:
            i = self._find(uid)
            if op == 3:
                if i >= 0:
                    o = i * _ALLOW_REC
                    self._buf[o:o + _ALLOW_REC] = b""
                    self.count -= 1
            elif i < 0 and self.count < ALLOW_MAX:
                rec = bytearray(_ALLOW_REC)
                rec[0] = len(uid)
                rec[1:1 + len(uid)] = uid
                self._buf.extend(rec)
                self.count += 1
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(self._buf)
        replace_file(tmp, self.path)
        return True
