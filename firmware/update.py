# Runs on the ESP32 (and the unix port in tests): receives an app update over the link — chunks to flash, every hash checked, staged in next/ for the boot stub.
#
# Imported by app.py when the first UPDATE_BEGIN arrives (never at boot: it costs heap).
# protocol/README.md "App updates over the link" has the exchange. On flash:
#   upd/begin.dat   update_id u32 | size u32 | chunks u16 | sha256[32] | version (the BEGIN)
#   upd/bundle.bin  the bundle bytes; chunk i at i * 192 (a chunk is stored only when it is
#                   the next one, so the file size says how many are held: resume after a
#                   power cut or a kill is the same as after a lost frame)
#   next.part/      files being unpacked; renamed next/ once every hash checked (atomic)
# A firmware image (UPDATE_BEGIN kind 1) goes to the next OTA partition instead (fwimage.py).
# Once staged, the board restarts (main.py switches apps) as soon as no tap is pending.
import asyncio
import hashlib
import json
import os
import struct

from protocol import ota as O
from protocol.compat import const

from main import NEXT, exists, rmtree

_DIR = "upd"
_BEGIN = "upd/begin.dat"
_BUNDLE = "upd/bundle.bin"
_PART = "next.part"
_CH = const(192)       # protocol.packet.UPDATE_CHUNK_MAX
_PIECE = const(512)    # bytes hashed or copied between two yields to the tap path
_SWITCH_POLL_MS = const(200)


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _safe(path):
    # A manifest path: relative, no "..", only [A-Za-z0-9_./-].
    if not path or path[0] == "/" or ".." in path or len(path) > 64:
        return False
    for c in path:
        if not (c.isalpha() or c.isdigit() or c in "_./-"):
            return False
    return True


class Updater:
    def __init__(self, app):
        self.app = app
        self.id = 0
        self.size = 0
        self.chunks = 0
        self.sha = b""
        self.version = ""
        self.kind = 0
        self.img = None        # fwimage.Image for a firmware update
        self.have = 0
        self.state = O.UPD_RECEIVING
        self.code = 0
        self._load()

    def _load(self):
        try:
            with open(_BEGIN, "rb") as fh:
                raw = fh.read()
        except OSError:
            return
        if len(raw) < 43:
            return
        self.id, self.size, self.chunks, self.kind = struct.unpack(">IIHB", raw[:11])
        self.sha = raw[11:43]
        self.version = raw[43:].decode()
        if self.kind == O.KIND_FIRMWARE:
            from fwimage import Image
            self.img = Image(self.size)
            self.have = min(self.img.held(), self.chunks)
        else:
            self.have = min(max(_size(_BUNDLE), 0) // _CH, self.chunks)
            if _size(_BUNDLE) >= self.size:
                self.have = self.chunks
        if exists(NEXT):
            self.state = O.UPD_STAGED
        print("tapkiosk:", "update", self.id, "resumes at chunk", self.have, "of", self.chunks)

    def _reply(self, uid=0, state=-1):
        self._status(uid or self.id, self.have if state < 0 else 0,
                     self.state if state < 0 else state, self.code)

    def _status(self, uid, have, state, code):
        # Straight out: a lost UPDATE_STATUS costs the host one BEGIN after RESEND_S.
        app = self.app
        if app.session.reachable():
            asyncio.create_task(app.send(O.UPDATE_STATUS, {"update_id": uid, "have": have,
                                                           "state": state, "code": code}))

    def on_frame(self, t, f):
        if t == O.UPDATE_BEGIN:
            self._begin(f)
        elif t == O.UPDATE_CHUNK and f["update_id"] == self.id and self.state == O.UPD_RECEIVING:
            self._chunk(f["index"], f["data"])

    def _begin(self, f):
        if f["update_id"] != self.id or self.state == O.UPD_FAILED:
            if exists("trial.dat"):
                self._reply(f["update_id"], O.UPD_BUSY)
                return
            self._start(f)
        elif self.state == O.UPD_RECEIVING and self.have == self.chunks:
            asyncio.create_task(self._finish())
            return
        self._reply()

    def _start(self, f):
        rmtree(_PART)
        rmtree(NEXT)
        rmtree(_DIR)
        os.mkdir(_DIR)
        self.id, self.size, self.chunks = f["update_id"], f["size"], f["chunks"]
        self.sha, self.version, self.kind = f["sha256"], f["version"], f["kind"]
        self.img = None
        with open(_BEGIN, "wb") as fh:
            fh.write(struct.pack(">IIHB", self.id, self.size, self.chunks, self.kind) + self.sha)
            fh.write(self.version.encode())
        if self.kind == O.KIND_FIRMWARE:
            from fwimage import Image
            self.img = Image(self.size)
        else:
            with open(_BUNDLE, "wb"):
                pass
        self.have = 0
        self.state = O.UPD_RECEIVING
        self.code = 0
        print("tapkiosk:", "update", self.id, "version", self.version, "begins:", self.chunks,
              "chunks")

    def _chunk(self, index, data):
        if index != self.have or self.have >= self.chunks:
            self._reply()  # the host resends from `have`
            return
        last = self.have == self.chunks - 1
        if len(data) != (self.size - self.have * _CH if last else _CH):
            self._reply()
            return
        try:
            if self.img is not None:
                self.img.write(index, data, self.have + 1)
            else:
                with open(_BUNDLE, "r+b") as fh:
                    fh.seek(self.have * _CH)
                    fh.write(data)
        except OSError:
            self._fail(O.UPD_ERR_STORAGE)
            return
        self.have += 1
        if self.have == self.chunks:
            asyncio.create_task(self._finish())
        else:
            self._reply()

    def _fail(self, code):
        print("tapkiosk:", "update", self.id, "refused: code", code)
        self.state = O.UPD_FAILED
        self.code = code
        rmtree(_PART)
        rmtree(_DIR)
        self._reply()

    async def _finish(self):
        self.state = O.UPD_STAGED  # no more chunks taken while checking
        if self.img is not None:
            await self._finish_image()
            return
        try:
            code = await self._unpack()
        except OSError:
            code = O.UPD_ERR_STORAGE
        except (ValueError, KeyError, TypeError, IndexError):
            code = O.UPD_ERR_MANIFEST
        if code:
            self._fail(code)
            return
        os.rename(_PART, NEXT)
        rmtree(_DIR)
        print("tapkiosk:", "update", self.id, "staged: version", self.version)
        self._reply()
        asyncio.create_task(self._switch())

    async def _finish_image(self):
        try:
            if not await self.img.check(self.size, self.sha):
                self._fail(O.UPD_ERR_BUNDLE_HASH)
                return
            self.img.boot(self.version)
        except OSError:
            self._fail(O.UPD_ERR_STORAGE)
            return
        rmtree(_DIR)
        print("tapkiosk:", "update", self.id, "firmware staged: version", self.version)
        self._reply()
        asyncio.create_task(self._switch())

    async def _hash(self, fh, n, out=None):
        h = hashlib.sha256()
        buf = bytearray(_PIECE)
        mv = memoryview(buf)
        while n > 0:
            k = fh.readinto(mv[:n if n < _PIECE else _PIECE])
            if not k:
                break
            h.update(mv[:k])
            if out is not None:
                out.write(mv[:k])
            n -= k
            await asyncio.sleep_ms(0)  # the tap path goes first
        return h.digest() if n == 0 else b""

    async def _unpack(self):
        with open(_BUNDLE, "rb") as fh:
            if await self._hash(fh, self.size) != self.sha:
                return O.UPD_ERR_BUNDLE_HASH
        rmtree(_PART)
        os.mkdir(_PART)
        with open(_BUNDLE, "rb") as fh:
            mlen = struct.unpack(">I", fh.read(4))[0]
            man = json.loads(fh.read(mlen))
            for path, size, sha in man["files"]:
                if not _safe(path) or path.split("/")[-1] == "VERSION":
                    return O.UPD_ERR_MANIFEST
                self._mkdirs(path)
                with open(_PART + "/" + path, "wb") as out:
                    got = await self._hash(fh, size, out)
                if _hex(got) != sha:
                    return O.UPD_ERR_FILE_HASH
        with open(_PART + "/VERSION", "w") as fh:
            fh.write(man["version"])
        return 0

    def _mkdirs(self, path):
        parts = path.split("/")
        d = _PART
        for p in parts[:-1]:
            d = d + "/" + p
            if not exists(d):
                os.mkdir(d)

    async def _switch(self):
        # Pending taps go to the host first; then the boot stub switches apps.
        app = self.app
        while app.outbox.pending() or app.tap_path.live_seq or app.session.ctrl:
            await asyncio.sleep_ms(_SWITCH_POLL_MS)
        await asyncio.sleep_ms(_SWITCH_POLL_MS)
        print("tapkiosk:", "restarting into version", self.version)
        import machine
        machine.reset()


def _hex(b):
    return "".join("%02x" % x for x in b)
