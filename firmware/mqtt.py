# Runs on the ESP32 (and the unix port in tests): a small asyncio MQTT 3.1.1 client (QoS 0/1, persistent session, LWT).
#
# umqtt.simple blocks and the unix port has no MQTT library, so this one drives a non-blocking
# socket through asyncio streams. What it does:
#   CONNECT with a last will and clean_session=0; after CONNACK: resend unacknowledged QoS 1
#   PUBLISHes with the DUP flag, SUBSCRIBE, then the retained "birth" message;
#   PUBLISH QoS 1 with PUBACK tracking, retried with DUP after retry_ms; incoming QoS 1 PUBLISH
#   is acknowledged; PINGREQ when idle for keepalive/2, and the connection is dropped when
#   nothing arrives for 1.5 x keepalive; reconnect with exponential backoff.
# In-flight messages live in slots allocated once; the receive buffer is allocated once.
#
# The byte stream comes from outside: `open_stream` is an async function returning an object
# with readinto(buf) -> n (0 = closed), write(data), drain() and close(); the default opens a
# TCP socket to the broker. Tests hand in canned bytes to drive the parser.
# Nothing here blocks the loop for long: a broker given by name is resolved once (DNS blocks
# on the ESP32) at the first connect and the address is kept for the rest of the boot; a write
# that cannot drain within write_ms counts as a lost connection (reconnect, not a watchdog reset).
import asyncio
import socket
import struct

from protocol.compat import const, ticks_diff, ticks_ms

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)
_SUBACK = const(0x90)
_PINGRESP = const(0xD0)
_DISCONNECT = const(0xE0)

_PINGREQ_PKT = b"\xc0\x00"
_EINPROGRESS = (115, 119, 36)  # Linux, lwIP (ESP32), BSD
_ETIMEDOUT = const(110)
_IPPROTO_TCP = const(6)
_TCP_NODELAY = const(1)

_RX_SIZE = const(640)
_MSG_SIZE = const(336)   # topic (tapkiosk/v1/<16>/status: 35) + payload (packet <= 296)
_BACKOFF_MIN = const(250)
_BACKOFF_MAX = const(15000)
_TICK_MS = const(100)

CONNACK_TEXT = ("accepted", "bad protocol version", "client id rejected", "server unavailable",
                "bad user name or password", "not authorised")


class MQTTError(Exception):
    def __init__(self, message, code=0):
        super().__init__(message)
        self.code = code


def _log(*args):
    print("mqtt:", *args)


# -- packet encoding (MQTT 3.1.1 section 2 and 3) ---------------------------------------
def _varlen(buf, off, n):
    # Remaining length at buf[off:]; returns the offset after it.
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            b |= 0x80
        buf[off] = b
        off += 1
        if not n:
            return off


def _s16(b):
    return struct.pack(">H", len(b)) + b


def _connect_packet(client_id, keepalive, will, user, password):
    flags = 0x00  # clean_session = 0: the broker keeps our subscription and queued QoS 1
    payload = _s16(client_id.encode())
    if will:
        topic, msg, retain, qos = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _s16(topic) + _s16(msg)
    if user:
        flags |= 0x80
        payload += _s16(user.encode())
        if password is not None:
            flags |= 0x40
            payload += _s16(password.encode())
    body = b"\x00\x04MQTT\x04" + bytes((flags,)) + struct.pack(">H", keepalive) + payload
    head = bytearray(5)
    head[0] = _CONNECT
    n = _varlen(head, 1, len(body))
    return bytes(head[:n]) + body


def _publish_into(buf, topic, payload, qos, retain, pid):
    # A PUBLISH packet in buf; returns its length.
    tl = len(topic)
    pl = len(payload)
    rem = 2 + tl + (2 if qos else 0) + pl
    buf[0] = _PUBLISH | (qos << 1) | (1 if retain else 0)
    o = _varlen(buf, 1, rem)
    struct.pack_into(">H", buf, o, tl)
    o += 2
    buf[o:o + tl] = topic
    o += tl
    if qos:
        struct.pack_into(">H", buf, o, pid)
        o += 2
    buf[o:o + pl] = payload
    return o + pl


def _subscribe_packet(pid, subs):
    body = bytearray(struct.pack(">H", pid))
    for topic, qos in subs:
        body.extend(_s16(topic))
        body.append(qos)
    head = bytearray(5)
    head[0] = _SUBSCRIBE
    n = _varlen(head, 1, len(body))
    return bytes(head[:n]) + body


def _tcp_socket(ai):
    # A non-blocking socket connecting to getaddrinfo entry `ai`, with Nagle off.
    s = socket.socket(ai[0], socket.SOCK_STREAM)
    try:
        # Nagle would delay each small QoS 1 round trip by tens of ms.
        s.setsockopt(getattr(socket, "IPPROTO_TCP", _IPPROTO_TCP),
                     getattr(socket, "TCP_NODELAY", _TCP_NODELAY), 1)
    except OSError:
        pass
    s.setblocking(False)
    try:
        s.connect(ai[-1])
    except OSError as e:
        if e.args[0] not in _EINPROGRESS:
            s.close()
            raise
    return s


def _publish_at(rx, t, n):
    # Where the parts of a received PUBLISH (type byte t, n bytes in rx) are: (topic length,
    # payload offset, packet id).
    tl = (rx[0] << 8) | rx[1]
    o = 2 + tl
    qos = (t >> 1) & 3
    if o + (2 if qos else 0) > n:
        raise MQTTError("malformed PUBLISH")
    if not qos:
        return tl, o, 0
    return tl, o + 2, (rx[o] << 8) | rx[o + 1]


class MQTTClient:
    def __init__(self, client_id, server, port=1883, user=None, password=None, keepalive=30,
                 will=None, birth=None, subs=(), inflight=8, retry_ms=5000, connect_ms=5000,
                 write_ms=5000, open_stream=None):
        # will / birth: (topic, message, retain, qos). subs: ((topic, qos), ...).
        self.client_id = client_id
        self.server = server
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.will = will
        self.birth = birth
        self.subs = subs
        self.retry_ms = retry_ms
        self.connect_ms = connect_ms
        self.write_ms = write_ms
        self.open_stream = open_stream or self._open_tcp
        self._addr = None          # the broker's address, resolved once
        self.on_message = None     # fn(topic memoryview, payload memoryview), called on the rx task
        self.on_connect = None     # fn(session_present)
        self.on_disconnect = None  # fn()
        self.connected = False
        self.connects = 0
        self.last_error = None
        self._s = None
        self._st = None
        self._lock = asyncio.Lock()
        self._pid = 0
        self._rx = bytearray(_RX_SIZE)
        self._rmv = memoryview(self._rx)
        self._hdr = bytearray(5)
        self._puback = bytearray(4)  # used by the receive task only
        # In-flight QoS 1 messages: whole PUBLISH packets, resent as they are with DUP set.
        self._n = inflight
        self._if_pid = [0] * inflight
        self._if_len = [0] * inflight
        self._if_at = [0] * inflight
        self._if_buf = [bytearray(_MSG_SIZE + 8) for _ in range(inflight)]
        self._free = asyncio.Event()
        self._last_rx = 0
        self._last_tx = 0
        self._rx_dead = False
        self.alive = ticks_ms()

    def _next_pid(self):
        while True:
            self._pid = self._pid + 1 if self._pid < 0xFFFF else 1
            if self._pid not in self._if_pid:
                return self._pid

    def inflight(self):
        return len(self._if_pid) - self._if_pid.count(0)

    # -- I/O ---------------------------------------------------------------------------
    async def _write(self, data):
        async with self._lock:
            st = self._st
            if st is None:
                raise OSError(107)  # ENOTCONN
            st.write(data)
            try:
                await asyncio.wait_for_ms(st.drain(), self.write_ms)
            except asyncio.TimeoutError:
                # A stalled connection (the broker or the Wi-Fi gone quiet): start again.
                self._rx_dead = True
                raise OSError(_ETIMEDOUT)
            self._last_tx = ticks_ms()

    async def _read_exact(self, mv):
        st = self._st
        got = 0
        n = len(mv)
        while got < n:
            k = await st.readinto(mv[got:])
            if not k:
                raise OSError(104)  # ECONNRESET: the broker closed the connection
            got += k
        self._last_rx = ticks_ms()

    async def _read_packet(self):
        # Returns (type byte, remaining length); the body is in self._rx (or skipped if too big).
        h = memoryview(self._hdr)
        await self._read_exact(h[:1])
        t = self._hdr[0]
        n = 0
        shift = 0
        for _ in range(4):
            await self._read_exact(h[1:2])
            b = self._hdr[1]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        else:
            raise MQTTError("bad remaining length")
        if n <= _RX_SIZE:
            if n:
                await self._read_exact(self._rmv[:n])
            return t, n
        left = n
        while left:
            k = left if left < _RX_SIZE else _RX_SIZE
            await self._read_exact(self._rmv[:k])
            left -= k
        _log("dropped an oversize packet of", n, "bytes")
        return t, -1

    def _close(self):
        s = self._s
        st = self._st
        self._s = None
        self._st = None
        for c in (st, s):
            if c is not None:
                try:
                    c.close()
                except OSError:
                    pass
        if self.connected:
            self.connected = False
            if self.on_disconnect is not None:
                self.on_disconnect()

    async def _open_tcp(self):
        if self._addr is None:
            # Once per boot: getaddrinfo blocks the whole loop while DNS answers.
            self._addr = socket.getaddrinfo(self.server, self.port, 0, socket.SOCK_STREAM)[0]
        s = self._s = _tcp_socket(self._addr)
        return asyncio.StreamReader(s)

    async def _handshake(self):
        await self._write(_connect_packet(self.client_id, self.keepalive, self.will, self.user,
                                          self.password))
        t, n = await asyncio.wait_for_ms(self._read_packet(), self.connect_ms)
        if t != _CONNACK or n != 2:
            raise MQTTError("expected CONNACK, got 0x%02x" % t)
        rc = self._rx[1]
        if rc:
            text = CONNACK_TEXT[rc] if rc < len(CONNACK_TEXT) else str(rc)
            raise MQTTError("broker refused the connection: " + text, rc)
        return self._rx[0] & 1

    # -- publishing ---------------------------------------------------------------------
    async def publish(self, topic, payload, qos=1, retain=False, wait_ms=2000):
        # QoS 1: the message is kept until PUBACK, across reconnects. Returns False if not
        # connected, or if every in-flight slot stays busy for wait_ms.
        if len(topic) + len(payload) > _MSG_SIZE:
            raise MQTTError("message too large")
        if not self.connected:
            return False
        if qos == 0:
            buf = bytearray(len(topic) + len(payload) + 8)
            n = _publish_into(buf, topic, payload, 0, retain, 0)
            await self._write(memoryview(buf)[:n])
            return True
        t0 = ticks_ms()
        while True:
            for i in range(self._n):
                if not self._if_pid[i]:
                    break
            else:
                i = -1
            if i >= 0:
                break
            if ticks_diff(ticks_ms(), t0) >= wait_ms or not self.connected:
                return False
            self._free.clear()
            try:
                await asyncio.wait_for_ms(self._free.wait(), _TICK_MS)
            except asyncio.TimeoutError:
                pass
        pid = self._next_pid()
        buf = self._if_buf[i]
        n = _publish_into(buf, topic, payload, 1, retain, pid)
        self._if_pid[i] = pid
        self._if_len[i] = n
        self._if_at[i] = ticks_ms()
        try:
            await self._write(memoryview(buf)[:n])
        except OSError as e:
            # Kept in flight: it goes again, with DUP, after the reconnect.
            self.last_error = e
            self._rx_dead = True
        return True

    async def _resend(self, older_than_ms):
        now = ticks_ms()
        for i in range(self._n):
            if self._if_pid[i] and (older_than_ms < 0 or ticks_diff(now, self._if_at[i]) >= older_than_ms):
                buf = self._if_buf[i]
                buf[0] |= 0x08  # DUP
                self._if_at[i] = ticks_ms()
                await self._write(memoryview(buf)[:self._if_len[i]])

    async def subscribe(self):
        if self.subs:
            await self._write(_subscribe_packet(self._next_pid(), self.subs))

    # -- receive loop -------------------------------------------------------------------
    async def _rx_loop(self):
        rx = self._rx
        mv = self._rmv
        try:
            while True:
                t, n = await self._read_packet()
                kind = t & 0xF0
                if kind == _PUBLISH and n > 0:
                    tl, o, pid = _publish_at(rx, t, n)
                    if self.on_message is not None:
                        self.on_message(mv[2:2 + tl], mv[o:n])
                    if t & 0x06 == 0x02:  # QoS 1
                        sm = self._puback
                        sm[0] = _PUBACK
                        sm[1] = 2
                        sm[2] = pid >> 8
                        sm[3] = pid & 0xFF
                        await self._write(sm)
                elif kind == _PUBACK and n == 2:
                    pid = (rx[0] << 8) | rx[1]
                    for i in range(self._n):
                        if self._if_pid[i] == pid:
                            self._if_pid[i] = 0
                            self._free.set()
                            break
                elif kind == _SUBACK and n >= 3:
                    for i in range(2, n):
                        if rx[i] == 0x80:
                            _log("subscription refused by the broker")
                # PINGRESP and anything else: _last_rx was updated, nothing more to do.
        except (OSError, MQTTError) as e:
            self.last_error = e
        self._rx_dead = True

    # -- connection supervisor ----------------------------------------------------------
    async def _session(self):
        sp = await self._handshake()
        self._rx_dead = False
        self.connected = True
        self.connects += 1
        rx_task = asyncio.create_task(self._rx_loop())
        try:
            await self._resend(-1)
            await self.subscribe()
            if self.birth:
                topic, msg, retain, qos = self.birth
                await self.publish(topic, msg, qos, retain)
            if self.on_connect is not None:
                self.on_connect(sp)
            ka = self.keepalive * 1000
            while not self._rx_dead:
                self.alive = ticks_ms()
                now = ticks_ms()
                if ticks_diff(now, self._last_rx) >= ka * 3 // 2:
                    raise MQTTError("no data from the broker for 1.5 x keepalive")
                if ticks_diff(now, self._last_tx) >= ka // 2:
                    await self._write(_PINGREQ_PKT)
                await self._resend(self.retry_ms)
                await asyncio.sleep_ms(_TICK_MS)
            raise MQTTError("connection lost: %r" % (self.last_error,))
        finally:
            rx_task.cancel()

    async def run(self):
        # Runs forever: connect, serve, reconnect with backoff.
        backoff = _BACKOFF_MIN
        while True:
            self.alive = ticks_ms()
            try:
                self._st = await self.open_stream()
                self._last_rx = ticks_ms()
                await self._session()
            except (OSError, MQTTError, asyncio.TimeoutError) as e:
                if self.connected:
                    backoff = _BACKOFF_MIN
                self.last_error = e
                _log("disconnected:", repr(e))
            self._close()
            await asyncio.sleep_ms(backoff + (ticks_ms() & 0x7F))
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def disconnect(self):
        if self._st is not None:
            try:
                await self._write(b"\xe0\x00")
            except OSError:
                pass
        self._close()
