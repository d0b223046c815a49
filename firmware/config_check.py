# Runs on the ESP32 (and the unix port in tests): reads and checks config.json once at boot (config.load/check import it, then drop it).
#
# Boot-time code only: config.load() and config.check() import this module for the one call and removes it from
# sys.modules afterwards, so its functions do not stay on the heap. Keep anything that outlives
# the call (the Config class, ConfigError) in config.py: a function defined here would keep this
# whole module alive.
import binascii
import json

from protocol.compat import const

from config import Config, ConfigError

_ENOENT = const(2)

KINDS = ("gate", "wash", "kiosk")
LINKS = ("serial", "mqtt")
BUSES = ("hsu", "i2c", "spi")


def _fail(key, what):
    raise ConfigError("config.json: " + key + " " + what)


def _int(d, key, lo, hi, name, default=None, none_ok=False):
    v = d.get(key, default)
    if v is None and none_ok:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        _fail(name, "must be an integer in %d..%d (got %r)" % (lo, hi, v))
    return v


def _dict(cfg, key):
    v = cfg.get(key)
    if not isinstance(v, dict):
        _fail(key, "must be an object")
    return v


def _pins(d, names, section):
    out = {}
    for n in names:
        out[n] = _int(d, n, 0, 48, section + "." + n, None, True)
    return out


def _device_id_ok(dev):
    if not isinstance(dev, str) or not 1 <= len(dev) <= 16:
        return False
    for c in dev:
        if not (c.isalpha() or c.isdigit() or c in "_.-") or ord(c) > 127:
            return False
    return True


def _mqtt(cfg):
    # (mqtt, wifi) settings of an MQTT reader.
    m = _dict(cfg, "mqtt")
    broker = m.get("broker")
    if not isinstance(broker, str) or not broker:
        _fail("mqtt.broker", "must name the broker host")
    user = m.get("user")
    password = m.get("password")
    if user is not None and not isinstance(user, str):
        _fail("mqtt.user", "must be text or null")
    if password is not None and not isinstance(password, str):
        _fail("mqtt.password", "must be text or null")
    mqtt = {"broker": broker, "port": _int(m, "port", 1, 65535, "mqtt.port", 1883),
            "user": user, "password": password,
            "keepalive": _int(m, "keepalive", 5, 600, "mqtt.keepalive", 30)}
    w = cfg.get("wifi") or {}
    if not isinstance(w, dict):
        _fail("wifi", "must be an object")
    return mqtt, {"ssid": w.get("ssid") or "", "password": w.get("password") or ""}


def _buttons(cfg, kind):
    # Wash program buttons: [(program, GPIO), ...] and the level of a pressed button.
    b = cfg.get("buttons")
    if b is None:
        return None, 0
    if kind != "wash" or not isinstance(b, dict) or not isinstance(b.get("pins"), dict):
        _fail("buttons", "must be {\"pins\": {\"<program>\": GPIO}} on a wash reader")
    out = []
    for code, pin in b["pins"].items():
        if not (isinstance(code, str) and code.isdigit() and 1 <= int(code) <= 255):
            _fail("buttons.pins", "keys must be wash program codes 1..255 (got %r)" % (code,))
        out.append((int(code), _int({"p": pin}, "p", 0, 48, "buttons.pins." + code)))
    if len(set(p for _, p in out)) != len(out):
        _fail("buttons.pins", "use a GPIO once")
    return out, _int(b, "active", 0, 1, "buttons.active", 0)


def check(cfg):
    # dict -> Config, or ConfigError naming the first bad key.
    if not isinstance(cfg, dict):
        raise ConfigError("config.json: top level must be an object")
    c = Config()
    dev = cfg.get("device_id")
    if not _device_id_ok(dev):
        _fail("device_id", "must be 1-16 characters of A-Z a-z 0-9 _ . - (got %r)" % (dev,))
    c.device_id = dev
    kind = cfg.get("kind")
    if kind not in KINDS:
        _fail("kind", "must be gate, wash or kiosk (got %r)" % (kind,))
    c.kind = kind
    c.kind_code = KINDS.index(kind) + 1
    key = cfg.get("key")
    try:
        if not isinstance(key, str) or len(key) != 64:
            raise ValueError
        c.key = binascii.unhexlify(key)
    except ValueError:
        _fail("key", "must be 64 hex digits (provision the board with tools/flash.py)")
    link = cfg.get("link", "serial")
    if link not in LINKS:
        _fail("link", "must be serial or mqtt (got %r)" % (link,))
    c.link = link
    if link == "serial":
        s = _dict(cfg, "serial")
        c.serial = {
            "uart": _int(s, "uart", 0, 3, "serial.uart"),
            "baud": _int(s, "baud", 1200, 5000000, "serial.baud", 115200),
            "tx": _int(s, "tx", 0, 48, "serial.tx", None, True),
            "rx": _int(s, "rx", 0, 48, "serial.rx", None, True),
        }
    else:
        c.mqtt, c.wifi = _mqtt(cfg)
    r = _dict(cfg, "reader")
    bus = r.get("bus")
    if bus not in BUSES:
        _fail("reader.bus", "must be hsu, i2c or spi (got %r)" % (bus,))
    c.reader = _pins(r, ("tx", "rx", "sda", "scl", "sck", "mosi", "miso", "cs", "reset", "irq"), "reader")
    c.reader["bus"] = bus
    c.reader["uart"] = _int(r, "uart", 0, 3, "reader.uart", 1)
    f = cfg.get("feedback") or {}
    if not isinstance(f, dict):
        _fail("feedback", "must be an object")
    c.feedback = _pins(f, ("relay", "led_r", "led_g", "buzzer"), "feedback")
    c.feedback["relay_active"] = _int(f, "relay_active", 0, 1, "feedback.relay_active", 1)
    c.debounce_ms = _int(cfg, "debounce_ms", 0, 60000, "debounce_ms", 1500)
    c.config_version = _int(cfg, "config_version", 0, 0x7FFFFFFF, "config_version", 0)
    c.service = _int(cfg, "service", 0, 0xFFFF, "service", 0)
    c.amount = _int(cfg, "amount", 0, 0xFFFFFFFF, "amount", 0)
    d = cfg.get("direction", 0)
    if d in ("in", "out", "none"):
        d = ("none", "in", "out").index(d)
    c.direction = _int({"d": d}, "d", 0, 2, "direction")
    c.decision_ms = _int(cfg, "decision_ms", 100, 30000, "decision_ms", 1500)
    c.outbox_slots = _int(cfg, "outbox_slots", 4, 1024, "outbox_slots", 64)
    c.wdt_ms = _int(cfg, "wdt_ms", 0, 120000, "wdt_ms", 8000)
    if 0 < c.wdt_ms < 2000:
        # main.py feeds the watchdog once a second: a shorter timeout resets the board in a loop.
        _fail("wdt_ms", "must be 0 (off) or 2000..120000 (got %d)" % c.wdt_ms)
    c.buttons, c.buttons_active = _buttons(cfg, kind)
    c.secure = cfg.get("secure", True)
    if c.secure is not True and c.secure is not False:
        _fail("secure", "must be true or false (got %r)" % (c.secure,))
    return c


def load(path):
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
