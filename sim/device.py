# Runs on CPython (sim): a simulated reader speaking wire protocol v1 over serial or MQTT.
"""Simulated device: the CPython counterpart of the firmware, for tests, benches and the demo.

``SimDevice(device_id, key, kind, transport)`` talks to the daemon over a
:class:`SerialTransport` (pyserial URL: a pty path or ``socket://host:port``, COBS frames of
``protocol.framing``) or an :class:`MqttTransport` (paho-mqtt, topics
``tapkiosk/v1/<id>/up|down|status``, QoS 1, ``offline`` as its last will).

Like the firmware it numbers frames ``boot << 16 | counter``, keeps taps without a decision in
an outbox (resent with their original bytes by ``flush_outbox``), accepts a DECISION only for
a pending tap, a WELCOME only for its HELLO, a PONG only for its nonce, and a CONFIG only with
a higher ``cfg_version`` (then ACKs it).
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from protocol import codes, control, framing
from protocol import packet as pk
from protocol import seq as seqs
from protocol.errors import ProtocolError
from protocol.mac import Mac

_KIND_CODES = {"gate": 1, "wash": 2, "kiosk": 3}
_DIRS = {None: pk.DIR_NONE, "in": pk.DIR_IN, "out": pk.DIR_OUT}

OnPacket = Callable[[bytes], None]


class SimError(Exception):
    """Root of the simulated device's errors."""


class NoReply(SimError, TimeoutError):
    """The host did not answer in time."""


class Refused(SimError):
    """The host answered with an ERROR frame."""

    def __init__(self, ref_seq: int, code: int, text: str) -> None:
        super().__init__(f"host refused seq {ref_seq}: "
                         f"{codes.ERRORS[code] if code < len(codes.ERRORS) else code} {text}")
        self.ref_seq, self.code, self.text = ref_seq, code, text


class SerialTransport:
    """COBS frames over a pyserial URL (a pty/tty path, ``socket://host:port``...)."""

    def __init__(self, url: str, baudrate: int = 115200) -> None:
        self.url = url
        self.baudrate = baudrate
        self._port: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wlock = threading.Lock()
        self.parser = framing.FrameParser()

    def attach(self, device_id: str, on_packet: OnPacket) -> None:
        """Open the port and start delivering received packets to ``on_packet``."""
        import serial

        self._port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0.05)
        sock = getattr(self._port, "_socket", None)
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._thread = threading.Thread(target=self._read, args=(on_packet,), daemon=True,
                                        name=f"sim serial {device_id}")
        self._thread.start()

    def _read(self, on_packet: OnPacket) -> None:
        port = self._port
        # A socket:// port: one poll and one recv a wake-up, as the daemon's link reads it
        # (pyserial's read: two polls and a one-byte recv, then a second recv for the rest).
        sock = port._socket if type(port).__module__.endswith(".protocol_socket") else None
        poller = None
        if sock is not None:
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
        while not self._stop.is_set():
            try:
                if poller is not None:
                    if not poller.poll(50):
                        continue
                    data = sock.recv(4096)
                    if not data:   # the other end closed
                        return
                else:
                    n = port.in_waiting
                    data = port.read(n if n > 0 else 1)
            except (BlockingIOError, InterruptedError):
                continue
            except Exception:  # noqa: BLE001 - port closed under us: the reader ends
                return
            for pkt in self.parser.feed(data):
                on_packet(pkt)

    def send(self, packet: bytes) -> None:
        """Write one packet as a COBS frame."""
        self.write_raw(framing.encode(packet))

    def write_raw(self, data: bytes) -> None:
        """Write bytes as they are (garbage, split frames) for fault tests. On a socket://
        port one send, pyserial's write for what the socket did not take."""
        with self._wlock:
            sock = getattr(self._port, "_socket", None)
            if isinstance(sock, socket.socket):
                try:
                    data = data[sock.send(data):]
                except (BlockingIOError, InterruptedError):
                    pass
            if data:
                self._port.write(data)

    def close(self) -> None:
        """Stop reading and close the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._port is not None:
            self._port.close()


class FdTransport:
    """COBS frames over a file descriptor, e.g. the master side of ``os.openpty()`` whose slave
    the daemon opens with pyserial."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wlock = threading.Lock()
        self.parser = framing.FrameParser()

    def attach(self, device_id: str, on_packet: OnPacket) -> None:
        """Start delivering received packets to ``on_packet``."""
        self._thread = threading.Thread(target=self._read, args=(on_packet,), daemon=True,
                                        name=f"sim fd {device_id}")
        self._thread.start()

    def _read(self, on_packet: OnPacket) -> None:
        import select

        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.fd], [], [], 0.05)
                if not r:
                    continue
                data = os.read(self.fd, 4096)
            except OSError:
                return
            if not data:
                return
            for pkt in self.parser.feed(data):
                on_packet(pkt)

    def send(self, packet: bytes) -> None:
        """Write one packet as a COBS frame."""
        self.write_raw(framing.encode(packet))

    def write_raw(self, data: bytes) -> None:
        """Write bytes as they are."""
        with self._wlock:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]

    def close(self) -> None:
        """Stop reading (the caller owns the fd)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)


class MqttTransport:
    """Packets over MQTT: publish on ``up``, subscribe to ``down``, LWT ``offline`` on status;
    over TLS when given the broker's ``ca`` certificate file."""

    def __init__(self, host: str, port: int, *, client_id: str | None = None,
                 clean: bool = False, keepalive: int = 30, ca: str | None = None) -> None:
        self.host, self.port = host, port
        self.ca = ca
        self.client_id = client_id
        self.clean = clean
        self.keepalive = keepalive
        self.client: Any = None
        self.connected = threading.Event()
        self.device_id = ""

    def attach(self, device_id: str, on_packet: OnPacket) -> None:
        """Connect (waits up to 10 s for the broker) and subscribe to the down topic."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.device_id = device_id
        base = f"tapkiosk/v1/{device_id}/"
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id or f"sim-{device_id}",
                        clean_session=self.clean, protocol=mqtt.MQTTv311)
        c.will_set(base + "status", b"offline", qos=1, retain=True)
        if self.ca is not None:
            c.tls_set(ca_certs=self.ca)
        c.max_inflight_messages_set(100)
        c.reconnect_delay_set(min_delay=1, max_delay=4)

        def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
            if rc.is_failure:
                return
            sock = client.socket()
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.subscribe(base + "down", qos=1)
            client.publish(base + "status", b"online", qos=1, retain=True)

        def on_subscribe(client: Any, userdata: Any, mid: Any, rcs: Any, props: Any = None) -> None:
            self.connected.set()

        def on_disconnect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
            self.connected.clear()

        c.on_connect = on_connect
        c.on_subscribe = on_subscribe
        c.on_disconnect = on_disconnect
        c.on_message = lambda client, userdata, msg: on_packet(bytes(msg.payload))
        self.client = c
        c.connect_async(self.host, self.port, keepalive=self.keepalive)
        c.loop_start()
        if not self.connected.wait(10):
            raise NoReply(f"MQTT broker {self.host}:{self.port} did not accept {device_id}")

    def send(self, packet: bytes) -> None:
        """Publish one packet on the up topic (QoS 1)."""
        self.client.publish(f"tapkiosk/v1/{self.device_id}/up", packet, qos=1)

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish anything (spoofing tests)."""
        self.client.publish(topic, payload, qos=1)

    def close(self, graceful: bool = True) -> None:
        """Disconnect; graceful says ``offline`` first, otherwise the broker sends the LWT."""
        if self.client is None:
            return
        if graceful:
            self.client.publish(f"tapkiosk/v1/{self.device_id}/status", b"offline", qos=1,
                                retain=True).wait_for_publish(2)
            self.client.disconnect()
        else:
            sock = self.client.socket()
            if sock is not None:
                sock.close()
        self.client.loop_stop()


class SimDevice:
    """A reader speaking protocol v1; see the module doc."""

    def __init__(self, device_id: str, key: bytes, kind: str = "kiosk", transport: Any = None,
                 *, boot: int = 1, fw: str = "sim-1.0", timeout: float = 5.0,
                 auto_ack: bool = True) -> None:
        if kind not in _KIND_CODES:
            raise SimError(f"bad kind {kind!r}")
        self.device_id = device_id
        self.key = bytes(key)
        self.kind = kind
        self.mac = Mac(self.key)
        self.boot = boot
        self.ctr = 0
        self.fw = fw
        self.timeout = timeout
        self.auto_ack = auto_ack
        self.transport = transport
        self.outbox: OrderedDict[int, bytes] = OrderedDict()
        self.cfg_version = 0
        self.allow: set[bytes] = set()
        self.configs: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []   # every DECISION accepted
        self.sale: dict[str, Any] | None = None      # the SALE armed on this reader, if any
        self.received = 0
        self.raw_in: list[bytes] = []              # every authenticated packet received
        self.bad_frames = 0
        self.ignored = 0
        self.welcome: dict[str, Any] | None = None
        self._cond = threading.Condition()
        self._seq_lock = threading.Lock()
        self._pending: dict[int, Any] = {}     # tap seq -> None | fields | Refused
        self._hello_seq: int | None = None
        self._pings: dict[int, Any] = {}
        self._other: dict[int, Refused] = {}   # ERRORs for frames nobody waits for
        if transport is not None:
            transport.attach(device_id, self._on_packet)

    # ------------------------------------------------------------------ frames out
    def next_seq(self) -> int:
        """boot << 16 | counter (protocol/seq.py): after CTR_MAX frames the next boot number."""
        with self._seq_lock:
            if self.ctr >= seqs.CTR_MAX:
                self.boot, self.ctr = seqs.next_boot(self.boot), 0
            self.ctr += 1
            return seqs.make(self.boot, self.ctr)

    def frame(self, ptype: int, fields: dict[str, Any], seq: int | None = None) -> tuple[int, bytes]:
        """(seq, packet) for a message from this device."""
        seq = self.next_seq() if seq is None else seq
        return seq, pk.encode(ptype, seq, self.device_id, fields, self.mac, pk.UP)

    def tap_frame(self, uid_hex: str, sak: int = 0x08, service: int = 0, amount_fen: int = 0,
                  direction: str | None = None, secure: bytes = b"", offline: bool = False,
                  sale_id: int = 0) -> tuple[int, bytes]:
        """(seq, TAP packet) without sending it; the tap goes to the outbox."""
        seq, raw = self.frame(pk.TAP, {
            "uid": bytes.fromhex(uid_hex), "sak": sak, "flags": pk.FLAG_OFFLINE if offline else 0,
            "direction": _DIRS[direction], "service": service, "amount": amount_fen,
            "device_time": int(time.time()) & 0xFFFFFFFF, "secure": secure, "sale_id": sale_id})
        self.outbox[seq] = raw
        return seq, raw

    def wait_sale(self, timeout: float = 10.0) -> dict[str, Any]:
        """The SALE armed on this reader, once it arrived (NoReply when none came in time)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.sale is not None, timeout):
                raise NoReply("no SALE arrived")
            return self.sale

    def send(self, raw: bytes) -> None:
        """Send a packet as it is."""
        self.transport.send(raw)

    def hello(self, resend_floor: int | None = None, reset: int = 1) -> dict[str, Any]:
        """HELLO -> WELCOME fields. The floor defaults to the oldest seq in the outbox."""
        if resend_floor is None:
            resend_floor = next(iter(self.outbox), 0)
        seq, raw = self.frame(pk.HELLO, {
            "fw": self.fw, "proto": 1, "kind": _KIND_CODES[self.kind], "caps": 0,
            "boot": self.boot & 0xFFFF, "reset": reset, "resend_floor": resend_floor})
        with self._cond:
            self._hello_seq = seq
            self.welcome = None
        self.send(raw)
        with self._cond:
            if not self._cond.wait_for(lambda: self.welcome is not None or seq in self._other,
                                       self.timeout):
                raise NoReply(f"no WELCOME for HELLO {seq}")
            if seq in self._other:
                raise self._other.pop(seq)
            return dict(self.welcome)

    def tap(self, uid_hex: str, sak: int = 0x08, service: int = 0, amount_fen: int = 0,
            direction: str | None = None, secure: bytes = b"", offline: bool = False,
            timeout: float | None = None, sale_id: int = 0) -> dict[str, Any]:
        """Send a TAP and wait for its DECISION fields (raises NoReply or Refused)."""
        seq, raw = self.tap_frame(uid_hex, sak, service, amount_fen, direction, secure, offline,
                                  sale_id)
        return self.resend(raw, timeout=timeout)

    def resend(self, raw: bytes, timeout: float | None = None) -> dict[str, Any]:
        """Send a TAP packet (again, byte for byte) and wait for its DECISION fields."""
        seq = int.from_bytes(raw[2:6], "big")
        with self._cond:
            self._pending.setdefault(seq, None)
        self.send(raw)
        return self.wait_decision(seq, timeout)

    def deliver(self, raw: bytes, attempts: int = 20, timeout: float = 0.5) -> dict[str, Any]:
        """Send a TAP and resend the same bytes until its DECISION comes (bounded), as the
        firmware's outbox does. Raises NoReply after ``attempts`` tries, Refused on ERROR."""
        seq = int.from_bytes(raw[2:6], "big")
        self.outbox.setdefault(seq, bytes(raw))
        for _ in range(max(1, attempts) - 1):
            try:
                return self.resend(raw, timeout)
            except NoReply:
                continue
            except Refused as e:
                # A later frame (an ACK, a PING) overtook this tap: announce the outbox with a
                # fresh HELLO (resend_floor = oldest pending seq), then send the tap again.
                if e.code != codes.ERR_REPLAY:
                    raise
                try:
                    self.hello(resend_floor=next(iter(self.outbox)))
                except (NoReply, Refused):
                    continue
        return self.resend(raw, timeout)

    def wait_decision(self, seq: int, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the DECISION (or ERROR) of tap ``seq``; the tap leaves the outbox."""
        with self._cond:
            self._pending.setdefault(seq, None)
            ok = self._cond.wait_for(lambda: self._pending.get(seq) is not None,
                                     self.timeout if timeout is None else timeout)
            if not ok:
                raise NoReply(f"no DECISION for tap {seq}")
            res = self._pending.pop(seq)
        if isinstance(res, Refused):
            raise res
        self.outbox.pop(seq, None)
        return res

    def flush_outbox(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Resend every tap of the outbox with its original bytes, oldest first."""
        out = []
        for seq, raw in list(self.outbox.items()):
            out.append(self.resend(raw, timeout))
        return out

    def void(self, tap_seq: int, timeout: float | None = None, raw: bytes | None = None
             ) -> dict[str, Any]:
        """Give up on tap ``tap_seq`` as the firmware does: the VOID (a new seq, or ``raw``
        to send the same VOID again) replaces the tap in the outbox; returns the DECISION
        fields for ``tap_seq`` (raises NoReply, or Refused on ERROR)."""
        if raw is None:
            _seq, raw = self.frame(pk.VOID, {"tap_seq": tap_seq})
        seq = int.from_bytes(raw[2:6], "big")
        self.outbox.pop(tap_seq, None)
        self.outbox[seq] = bytes(raw)
        with self._cond:
            self._pending[tap_seq] = None
        self.send(raw)
        with self._cond:
            ok = self._cond.wait_for(lambda: self._pending.get(tap_seq) is not None
                                     or seq in self._other,
                                     self.timeout if timeout is None else timeout)
            if seq in self._other:
                self._pending.pop(tap_seq, None)
                raise self._other.pop(seq)
            if not ok:
                raise NoReply(f"no DECISION for VOID of tap {tap_seq}")
            res = self._pending.pop(tap_seq)
        self.outbox.pop(seq, None)
        return res

    def ping(self, nonce: int | None = None) -> dict[str, Any]:
        """PING -> PONG fields."""
        nonce = int.from_bytes(os.urandom(4), "big") if nonce is None else nonce
        seq, raw = self.frame(pk.PING, {"nonce": nonce})
        with self._cond:
            self._pings[nonce] = None
        self.send(raw)
        with self._cond:
            if not self._cond.wait_for(lambda: self._pings.get(nonce) is not None
                                       or seq in self._other, self.timeout):
                raise NoReply(f"no PONG for nonce {nonce}")
            if seq in self._other:
                raise self._other.pop(seq)
            return self._pings.pop(nonce)

    def event(self, code: int, value: int = 0, text: str = "") -> int:
        """Send an EVENT (no reply); returns its seq."""
        seq, raw = self.frame(pk.EVENT, {"code": code, "value": value, "text": text})
        self.send(raw)
        return seq

    def wait_error(self, ref_seq: int, timeout: float | None = None) -> Refused:
        """Wait for the ERROR the host sent about ``ref_seq``."""
        with self._cond:
            if not self._cond.wait_for(lambda: ref_seq in self._other,
                                       self.timeout if timeout is None else timeout):
                raise NoReply(f"no ERROR for seq {ref_seq}")
            return self._other.pop(ref_seq)

    def reboot(self) -> None:
        """A new boot: counter back to 0 under the next boot number; the outbox survives."""
        with self._seq_lock:
            self.boot, self.ctr = seqs.next_boot(self.boot), 0

    def close(self) -> None:
        """Close the transport."""
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------------ frames in
    def _on_packet(self, data: bytes) -> None:
        try:
            p = pk.decode(data, self.mac, pk.DOWN)
        except ProtocolError:
            with self._cond:
                self.bad_frames += 1
            return
        if p.device_id != self.device_id:
            self.bad_frames += 1
            return
        f = p.fields
        ack = None
        with self._cond:
            self.received += 1
            self.raw_in.append(bytes(data))
            if p.type == pk.DECISION:
                seq = f["tap_seq"]
                if seq in self._pending and self._pending[seq] is None:
                    self._pending[seq] = f
                    self.decisions.append(f)
                else:
                    self.ignored += 1
            elif p.type == pk.WELCOME:
                if f["hello_seq"] == self._hello_seq and self.welcome is None:
                    self.welcome = f
                else:
                    self.ignored += 1
            elif p.type == pk.PONG:
                if f["nonce"] in self._pings and self._pings[f["nonce"]] is None:
                    self._pings[f["nonce"]] = f
                else:
                    self.ignored += 1
            elif p.type == pk.ERROR:
                err = Refused(f["ref_seq"], f["code"], f["text"])
                if f["ref_seq"] in self._pending and self._pending[f["ref_seq"]] is None:
                    self._pending[f["ref_seq"]] = err
                else:
                    self._other[f["ref_seq"]] = err
            elif p.type == pk.SALE:
                if f["amount"]:
                    self.sale = f
                elif self.sale is not None and self.sale["sale_id"] == f["sale_id"]:
                    self.sale = None
            elif p.type == pk.CONFIG:
                if f["cfg_version"] > self.cfg_version:
                    self.cfg_version = f["cfg_version"]
                    op = f["allow_op"]
                    if op == control.ALLOW_REPLACE:
                        self.allow = set(f["allow"])
                    elif op == control.ALLOW_ADD:
                        self.allow |= set(f["allow"])
                    elif op == control.ALLOW_REMOVE:
                        self.allow -= set(f["allow"])
                    self.configs.append(f)
                    if self.auto_ack:
                        ack = p.seq
                else:
                    self.ignored += 1
            self._cond.notify_all()
        if ack is not None:
            _seq, raw = self.frame(pk.ACK, {"ref_seq": ack, "code": 0})
            try:
                self.send(raw)
            except Exception:  # noqa: BLE001 - the host pushes the config again next HELLO
                pass
