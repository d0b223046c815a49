# Runs on both CPython and MicroPython: the fleet messages — STATUS, UPDATE_BEGIN, UPDATE_CHUNK, UPDATE_STATUS — their bodies and codes.
#
# protocol/packet.py loads this module with the first such frame it parses or encodes, so a
# reader that only taps never keeps these tables on its heap (firmware/status.py builds the
# STATUS body itself for the same reason). protocol/README.md, "App updates over the link",
# has the exchange and the byte diagrams.
from protocol.compat import const

STATUS = const(0x10)
UPDATE_BEGIN = const(0x11)
UPDATE_CHUNK = const(0x12)
UPDATE_STATUS = const(0x13)
NAMES = {STATUS: "STATUS", UPDATE_BEGIN: "UPDATE_BEGIN", UPDATE_CHUNK: "UPDATE_CHUNK",
         UPDATE_STATUS: "UPDATE_STATUS"}
DIRECTIONS = {STATUS: b"U", UPDATE_BEGIN: b"D", UPDATE_CHUNK: b"D", UPDATE_STATUS: b"U"}

# STATUS.link
LINK_SERIAL = const(1)
LINK_MQTT = const(2)

# UPDATE_BEGIN.kind
KIND_APP = const(0)        # the bundle: manifest + app files, staged in next/
KIND_FIRMWARE = const(1)   # a MicroPython app image for the next OTA partition
# UPDATE_STATUS.state
UPD_RECEIVING = const(0)   # `have` chunks stored; send chunk `have` next
UPD_STAGED = const(1)      # every hash checked: switches on the next boot
UPD_FAILED = const(2)      # refused (UPDATE_STATUS.code says why); the old app keeps running
UPD_BUSY = const(3)        # another update is staged or on trial
# UPDATE_STATUS.code when failed
UPD_ERR_BUNDLE_HASH = const(1)  # the chunks put together do not hash to UPDATE_BEGIN.sha256
UPD_ERR_MANIFEST = const(2)     # the manifest does not parse or names a bad path
UPD_ERR_FILE_HASH = const(3)    # a file does not hash to its manifest entry
UPD_ERR_STORAGE = const(4)      # the filesystem refused a write
UPDATE_CHUNK_MAX = const(192)   # data bytes in one UPDATE_CHUNK

# Flat, as protocol/packet.py SPECS: name, kind, lo, hi for each field in turn.
SPECS = {
    STATUS: (
        "app", "s", 0, 32,
        "mpy", "s", 0, 32,
        "uptime_s", "I", 0, 0xFFFFFFFF,
        "heap_free", "I", 0, 0xFFFFFFFF,
        "reset", "B", 0, 255,
        "link", "B", 0, 2,
        "outbox", "H", 0, 0xFFFF,
        "trial", "B", 0, 1,
    ),
    UPDATE_BEGIN: (
        "update_id", "I", 1, 0xFFFFFFFF,
        "version", "s", 1, 32,
        "size", "I", 1, 0xFFFFFFFF,
        "chunks", "H", 1, 0xFFFF,
        "sha256", "b", 32, 32,
        "kind", "B", 0, 1,
    ),
    UPDATE_CHUNK: (
        "update_id", "I", 1, 0xFFFFFFFF,
        "index", "H", 0, 0xFFFF,
        "data", "b", 1, UPDATE_CHUNK_MAX,
    ),
    UPDATE_STATUS: (
        "update_id", "I", 0, 0xFFFFFFFF,
        "have", "H", 0, 0xFFFF,
        "state", "B", 0, 3,
        "code", "B", 0, 255,
    ),
}
