# Runs on the MicroPython unix port only (tests, demo): stand-in for the ESP32 `network` module (loopback "Wi-Fi").
from micropython import const

STA_IF = const(0)
AP_IF = const(1)

STAT_IDLE = const(1000)
STAT_CONNECTING = const(1001)
STAT_GOT_IP = const(1010)

_MAC = b"\x24\x0a\xc4\x00\x00\x01"


def hostname(name=None):
    return "tapkiosk-sim" if name is None else None


class WLAN:
    # The unix port has a real IP stack: the "station" is connected as soon as it is asked to.
    def __init__(self, interface_id=STA_IF):
        self._if = interface_id
        self._active = False
        self._ssid = ""
        self._connected = False

    def active(self, is_active=None):
        if is_active is None:
            return self._active
        self._active = bool(is_active)
        return None

    def connect(self, ssid=None, key=None, **kw):
        self._active = True
        self._ssid = ssid or ""
        self._connected = True

    def disconnect(self):
        self._connected = False

    def isconnected(self):
        return True

    def status(self, param=None):
        if param == "rssi":
            return -50
        return STAT_GOT_IP

    def scan(self):
        return []

    def ifconfig(self, config=None):
        if config is None:
            return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
        return None

    def ipconfig(self, key=None, **kw):
        return "127.0.0.1" if key in ("addr4", None) else None

    def config(self, *args, **kw):
        if kw:
            if "ssid" in kw:
                self._ssid = kw["ssid"]
            return None
        key = args[0] if args else None
        if key == "mac":
            return _MAC
        if key in ("ssid", "essid"):
            return self._ssid
        if key in ("hostname", "dhcp_hostname"):
            return hostname()
        if key == "channel":
            return 1
        if key == "txpower":
            return 20
        raise ValueError("unknown config param")
