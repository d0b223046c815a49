# Runs on the ESP32 (and the unix port in tests): reads and checks config.json, keeps the small state files on flash.
#
# config.json sits at the filesystem root (the process cwd under the unix port); tools/flash.py
# writes it. A missing or bad file raises ConfigError with one line that says what to fix.
# State files (all at the root, all small, none written per tap):
#   boot.dat    boot counter u16, written once per boot
#   params.json settings pushed by the host (CONFIG/WELCOME): cfg_version, relay_ms, ...
#   allow.bin   offline allow-list: records of u8 length + 10 bytes of UID
import json
import struct

from protocol.compat import const

BOOT_FILE = "boot.dat"
PARAMS_FILE = "params.json"
ALLOW_FILE = "allow.bin"

ALLOW_MAX = const(1000)  # UIDs kept for offline gate mode
_ALLOW_REC = const(11)   # u8 length + 10 bytes

_ENOENT = const(2)

# Settings the host may change (CONFIG, WELCOME) and their defaults before the first contact.
PARAM_DEFAULTS = {
    "cfg_version": 0,
    "relay_ms": 800,
    "debounce_ms": 1500,
    "offline_after_s": 10,
    "heartbeat_s": 15,
}


class ConfigError(ValueError):
    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


class Config:
    # Plain attributes, checked once at boot.
    def __init__(self):
        self.device_id = ""
        self.kind = "gate"
        self.kind_code = 1
        self.key = b""
        self.link = "serial"
        self.serial = None
        self.mqtt = None
        self.wifi = None
        self.reader = None
        self.feedback = None
        self.debounce_ms = 1500
        self.config_version = 0
        # Optional keys (not written by tools/flash.py; defaults suit a real site).
        self.service = 0          # wash program / service code sent with each TAP
        self.amount = 0           # kiosk amount in fen sent with each TAP
        self.direction = 0        # gate: 0 none, 1 in, 2 out
        self.decision_ms = 1500   # how long a member waits for the host's answer
        self.outbox_slots = 64
        self.wdt_ms = 8000        # 0 disables the watchdog
        self.secure = True        # read NTAG 424 DNA SUN data from ISO-DEP cards (sun.py)


def check(cfg):
    # dict -> Config, or ConfigError naming the first bad key. The checker (config_check.py) is
    # boot-time code: imported for this call and dropped after it, to give its heap back.
    import sys
    import config_check
    try:
        return config_check.check(cfg)
    finally:
        del sys.modules["config_check"]


def load(path="config.json"):
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as e:
        if e.args[0] == _ENOENT:
            raise ConfigError("config.json missing: provision the board with tools/flash.py")
        raise ConfigError("config.json unreadable (OSError %d)" % e.args[0])
    try:
        cfg = json.loads(text)
    except ValueError:
        raise ConfigError("config.json is not valid JSON: provision the board again")
    return check(cfg)


def _read_boot(path):
    try:
        with open(path, "rb") as fh:
            raw = fh.read(2)
    except OSError:
        return 0
    return struct.unpack(">H", raw)[0] if len(raw) == 2 else 0


def next_boot(path=BOOT_FILE):
    # Reads, increments and writes the boot counter: called once per boot (and again only if
    # the 16-bit per-boot counter runs out). 1..65535, never 0, so seq 0 never exists.
    # The new number goes to a temporary file that then replaces boot.dat, and both are read:
    # a power cut mid-write leaves the old or the new number. (Truncating boot.dat in place
    # could leave it empty: the count would restart at 1, every seq would fall below what the
    # host accepted, and the host would refuse the device as a replay.)
    tmp = path + ".tmp"
    n = _read_boot(path)
    t = _read_boot(tmp)
    if t > n:
        n = t
    n = n + 1 if n < 0xFFFF else 1
    with open(tmp, "wb") as fh:
        fh.write(struct.pack(">H", n))
    _replace(tmp, path)
    return n


def load_params(path=PARAMS_FILE):
    p = dict(PARAM_DEFAULTS)
    try:
        with open(path) as fh:
            saved = json.loads(fh.read())
        for k in PARAM_DEFAULTS:
            v = saved.get(k)
            if isinstance(v, int):
                p[k] = v
    except (OSError, ValueError, AttributeError):
        pass
    return p


def save_params(p, path=PARAMS_FILE):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(json.dumps(p))
    _replace(tmp, path)


def _replace(tmp, path):
    import os
    try:
        os.rename(tmp, path)
    except OSError:
        # Some filesystems refuse to rename over an existing file.
        try:
            os.remove(path)
        except OSError:
            pass
        os.rename(tmp, path)


class AllowList:
    # Offline allow-list: fixed 11-byte records in one bytearray, linear search (offline path only).
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
        _replace(tmp, self.path)
        return True
