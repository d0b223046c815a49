# Runs on CPython (host): MQTT link — paho-mqtt 2.x client on tapkiosk/v1/+/up, /down and /status.
"""MQTT link.

A paho-mqtt 2.x client (``CallbackAPIVersion.VERSION2``) with a fixed client id and a
persistent session (``clean_session=False``), QoS 1 both ways, subscribed to
``tapkiosk/v1/+/up`` and ``tapkiosk/v1/+/status``. Callbacks are thin: they put the message
on a queue, and one worker thread hands it to the service with the topic's device id, which
must equal the id inside the packet; a TAP of a device already loaded arriving while the
worker has nothing queued is handled on paho's thread (one hand-off less; see
``_on_message``). Replies go to ``tapkiosk/v1/<id>/down``. paho reconnects
with backoff; TCP_NODELAY is set on every (re)connection in ``on_connect``.

Each message is stamped with ``time.perf_counter()`` when paho hands it over, so the tap
latency metric includes the time it waited in the queue. The connection's state changes
(connected, refused, cannot connect, lost) are logged at WARNING with the cause, once per
change, and exported as ``tapkiosk_link_up{link}``. paho's ``publish`` only queues, so
replies never wait on the broker's socket here.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import paho.mqtt.client as mqtt

from host.site.links.mqtt_child import PREFIX, new_client, set_nodelay
from host.site.service import Service
from protocol import packet as pk

log = logging.getLogger("tapkiosk.mqtt")

_QUEUE_MAX = 100_000
_SENDERS_MAX = 4096


def topic_device(topic: str, leaf: str) -> str | None:
    """``tapkiosk/v1/<id>/<leaf>`` -> id (None for another topic)."""
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == "tapkiosk" and parts[1] == "v1" and parts[3] == leaf:
        return parts[2] or None
    return None


class MqttInbox:
    """What every MQTT link shares once a message is in: the service, the worker queue
    (with the fast path for a TAP of a loaded device, ``deliver``), the per-device send
    functions. A subclass gets messages to ``deliver`` and frames out through ``send_to``."""

    def __init__(self, service: Service, name: str) -> None:
        self.service = service
        self.name = name
        self.connected = threading.Event()   # set once the broker acknowledged our SUBSCRIBE
        self._q: queue.Queue[Any] = queue.Queue(_QUEUE_MAX)
        #: Messages put on the queue (the receiving thread) and handled from it (the worker).
        self._queued = 0
        self._handled = 0
        self._senders: dict[str, Callable[[bytes], None]] = {}
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="mqtt worker", daemon=True)
        self._up = service.metrics.link_up.labels(self.name)
        self._up.set(0)
        self._down_cause: str | None = None

    def send_to(self, device_id: str, packet: bytes) -> None:
        """Publish a packet on the device's down topic (QoS 1); never blocks."""
        raise NotImplementedError

    def deliver(self, topic: str, payload: bytes, received: float) -> None:
        """A message from the broker (``received``: ``time.perf_counter()`` when it came)."""
        dev = self._fast(topic, payload) if self._queued == self._handled else None
        if dev is not None:
            # A TAP of a device already loaded, nothing queued before it: handled here, on
            # the receiving thread (parse, MAC, in-flight gate, submit to the writer: nothing
            # that waits), which saves the hand-off to the worker. Frames stay in order.
            try:
                self.service.handle(payload, self._sender(dev), link=self.name, expect=dev,
                                    received=received)
            except Exception:  # noqa: BLE001 - one bad message must not stop the link
                log.exception("mqtt %s: handling %s failed", self.name, topic)
            return
        self._to_worker()
        self._queued += 1
        self._q.put((topic, payload, received))

    def _to_worker(self) -> None:
        """Called before a message is queued for the worker (a subclass that holds taps
        hands them over first)."""

    def _fast(self, topic: str, payload: bytes) -> str | None:
        """The device id of a TAP frame (type byte) on the up topic of a device whose state
        is in RAM; None for anything else."""
        if (len(payload) < 2 or payload[1] != pk.TAP or not topic.endswith("/up")
                or self._stop.is_set()):
            return None
        dev = topic_device(topic, "up")
        return dev if dev is not None and self.service.registry.known(dev) is not None else None

    def _down(self, cause: str) -> None:
        self._up.set(0)
        if cause != self._down_cause and not self._stop.is_set():
            self._down_cause = cause
            log.warning("mqtt %s: link down: %s", self.name, cause)

    def _sender(self, device_id: str) -> Callable[[bytes], None]:
        """The send function of a device's down topic, made once per device (at most
        ``_SENDERS_MAX`` remembered: ids that are not registered must not grow it)."""
        send = self._senders.get(device_id)
        if send is None:
            if len(self._senders) >= _SENDERS_MAX:
                self._senders.clear()
            send = self._senders[device_id] = partial(self.send_to, device_id)
        return send

    def _stop_worker(self, timeout: float) -> None:
        """Stop taking messages, finish the queued ones; the link counts as down."""
        self._stop.set()
        self._q.put(None)
        self._worker.join(timeout)
        self._up.set(0)

    def _work(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            self._dispatch_safe(*item)
            self._handled += 1   # written by this thread only; _queued by the receiver only

    def _dispatch_safe(self, topic: str, payload: bytes, received: float) -> None:
        try:
            self._dispatch(topic, payload, received)
        except Exception:  # noqa: BLE001 - one bad message must not stop the link
            log.exception("mqtt %s: handling %s failed", self.name, topic)

    def _dispatch(self, topic: str, payload: bytes, received: float) -> None:
        dev = topic_device(topic, "up")
        if dev is not None:
            self.service.handle(bytes(payload), self._sender(dev), link=self.name, expect=dev,
                                received=received)
            return
        dev = topic_device(topic, "status")
        if dev is not None:
            text = bytes(payload).decode("ascii", "replace").strip()
            if text in ("online", "offline"):
                self.service.status(dev, text == "online")


class MqttLink(MqttInbox):
    """Serves every device that talks through one broker, paho in this process; see the
    module doc."""

    def __init__(self, host: str, port: int, service: Service, *,
                 client_id: str = "tapkiosk-daemon", username: str | None = None,
                 password: str | None = None, tls: bool = False, ca_file: str | None = None,
                 keepalive: int = 30) -> None:
        super().__init__(service, f"mqtt:{host}:{port}")
        self.host, self.port = host, port
        self._sub_mid: int | None = None
        self._keepalive = keepalive
        c = new_client(client_id, username, password, tls, ca_file)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        """Publish on any topic (the daemon's events)."""
        self.client.publish(topic, payload, qos=qos)

    def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish several QoS-0 messages (the daemon's events; paho queues each)."""
        for topic, payload in messages:
            self.client.publish(topic, payload, qos=0)

    def start(self) -> "MqttLink":
        """Connect in the background (the broker may be down; paho keeps retrying)."""
        self._worker.start()
        self.client.connect_async(self.host, self.port, keepalive=self._keepalive)
        self.client.loop_start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking messages, finish the queued ones, disconnect."""
        self._stop_worker(timeout)
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    # ------------------------------------------------------------- paho callbacks (thin)
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if rc.is_failure:
            self._down(f"connection refused by the broker: {rc}")
            return
        set_nodelay(client)
        _rc, self._sub_mid = client.subscribe([(PREFIX + "+/up", 1), (PREFIX + "+/status", 1)])
        log.log(logging.WARNING if self._down_cause else logging.INFO,
                "mqtt %s: connected (session present: %s)", self.name,
                getattr(flags, "session_present", "?"))
        self._down_cause = None

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its ``except OSError``: the error is the one being handled.
        err = sys.exc_info()[1]
        self._down(f"cannot connect: {err if err is not None else 'connection failed'}")

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                      props: Any = None) -> None:
        # Without a stored session (broker restarted without persistence) frames published
        # before the SUBACK would find no subscriber: "connected" means subscribed.
        if mid == self._sub_mid:
            self.connected.set()
            self._up.set(1)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any = None) -> None:
        self.connected.clear()
        self._down(f"disconnected ({rc}); reconnecting")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.deliver(msg.topic, msg.payload, time.perf_counter())

    def send_to(self, device_id: str, packet: bytes) -> None:
        """Publish a packet on the device's down topic (QoS 1)."""
        self.client.publish(PREFIX + device_id + "/down", packet, qos=1)
