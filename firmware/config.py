# Runs on the ESP32 (and the unix port in tests): reads and checks config.json, keeps the small state files on flash.
#
# config.json sits at the filesystem root (the process cwd under the unix port); tools/flash.py
# writes it. A missing or bad file raises ConfigError with one line that says what to fix.
# State files (all at the root, all small, none written per tap):
#   boot.dat    boot counter u16 + 4-byte tag of the key it counts for, written once per boot
#   params.json settings pushed by the host (CONFIG/WELCOME): cfg_version, relay_ms, ...
#   allow.bin   offline allow-list of a gate (allowlist.py)
import json


BOOT_FILE = "boot.dat"
PARAMS_FILE = "params.json"



# Settings the host may change (CONFIG, WELCOME) and their defaults before the first contact.
PARAM_DEFAULTS = {
    "cfg_version": 0,
    "relay_ms": 800,
    "debounce_ms": 1500,
    "offline_after_s": 10,
    "heartbeat_s": 15,
}


class ConfigError(ValueError):
    # One line that says what to fix: str(e) on both interpreters.
    pass


class Config:
    # Plain attributes, all set by config_check.check() once at boot (no __init__: its code would
    # stay on the heap for one call). What they hold:
    #   device_id, kind ("gate" | "wash" | "kiosk"), kind_code (1 | 2 | 3), key (32 bytes),
    #   link ("serial" | "mqtt"), serial / mqtt / wifi (dicts, None when the link does not use
    #   them), reader, feedback (pin dicts), debounce_ms, config_version;
    #   optional keys (not written by tools/flash.py; defaults suit a real site): service (wash
    #   program sent with each TAP), amount (kiosk fen), direction (gate: 0 none, 1 in, 2 out),
    #   decision_ms (how long a member waits for the host's answer), outbox_slots, wdt_ms (0 =
    #   no watchdog), secure (read NTAG 424 DNA SUN data from ISO-DEP cards, sun.py),
    #   buttons (wash: the program buttons, {"pins": {"<program>": GPIO}, "active": 0|1}, as
    #   a list of (program, GPIO) and the pressed level; buttons.py).
    serial = None
    buttons = None
    buttons_active = 0
    mqtt = None
    wifi = None


def once(module, fn, *args):
    # Code run seldom (boot, a fault, a CONFIG): `module` is imported for this one call and
    # dropped after it, to give its heap back.
    import sys
    m = __import__(module)
    try:
        return getattr(m, fn)(*args)
    finally:
        del sys.modules[module]


def check(cfg):
    # dict -> Config, or ConfigError naming the first bad key (config_check.py).
    return once("config_check", "check", cfg)


def load(path="config.json"):
    # config.json -> Config, or ConfigError with one line that says what to fix.
    return once("config_check", "load", path)


def next_boot(path=BOOT_FILE, key=None):
    # The next boot number, 0 once they are used up (bootcount.py).
    return once("bootcount", "next_boot", path, key)


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


def replace_file(tmp, path):
    # Moves tmp over path (a power cut leaves one or the other).
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
