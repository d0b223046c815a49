# Runs on CPython (pytest): the event bus — bounded drop-oldest queues, kinds, MQTT forwarding.
"""The bus never blocks a publisher: a slow subscriber loses its oldest events; events reach
MQTT as ``tapkiosk/v1/events/<kind>``."""

from __future__ import annotations

import json
import queue
import threading

import paho.mqtt.client as mqtt
import pytest

from conftest import wait_until
from host.errors import InputError
from host.web.events import EventBus, MqttEventPublisher


def test_slow_subscriber_loses_its_oldest_events() -> None:
    bus = EventBus(queue_size=3)
    slow, picky = bus.subscribe(), bus.subscribe(["sale"])
    for n in range(5):
        bus.publish("tap", {"n": n})
    bus.publish("sale", {"n": 5})
    got = [slow.get(timeout=0) for _ in range(4)]
    assert [e.data["n"] for e in got[:3]] == [3, 4, 5] and got[3] is None
    assert slow.dropped == 3
    assert [e.id for e in got[:3]] == [4, 5, 6]  # the gap in ids shows what was lost
    only = picky.get(timeout=0)
    assert only.kind == "sale" and picky.get(timeout=0) is None and picky.dropped == 0


def test_publish_checks_kind_and_data() -> None:
    bus = EventBus()
    with pytest.raises(InputError):
        bus.publish("taps", {})
    with pytest.raises(InputError):
        bus.publish("tap", {"when": object()})
    with pytest.raises(InputError):
        bus.subscribe(["tap", "nonsense"])
    event = bus.publish("decision", {"verdict": "grant"})
    assert json.loads(event.json) == {"id": event.id, "kind": "decision", "ts": event.ts,
                                      "data": {"verdict": "grant"}}
    assert event.sse() == f"id: {event.id}\nevent: decision\ndata: {event.json}\n\n"


def test_closed_subscription_wakes_its_reader_and_leaves_the_bus() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    out: list[object] = []
    reader = threading.Thread(target=lambda: out.append(sub.get(timeout=30)))
    reader.start()
    sub.close()
    reader.join(30)
    assert out == [None] and bus.subscribers == 0
    bus.publish("tap", {})  # nobody listening: nothing to do, nothing raised


@pytest.mark.mqtt
def test_events_are_forwarded_to_mqtt(broker) -> None:
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="api-events-test")
    sub.on_message = lambda c, u, msg: received.put(msg)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("tapkiosk/v1/events/#", qos=1)
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="api-events-daemon")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    bus = EventBus()
    forwarder = MqttEventPublisher(bus, lambda t, p: pub.publish(t, p, qos=1)).start()
    try:
        wait_until(subscribed.is_set, 10, what="the test client subscribed")
        event = bus.publish("device_online", {"device_id": "W1"})
        msg = received.get(timeout=10)
        assert msg.topic == "tapkiosk/v1/events/device_online"
        assert json.loads(msg.payload) == json.loads(event.json)
        wait_until(lambda: forwarder.sent == 1, 10, what="the forwarder counted it")
    finally:
        forwarder.stop()
        for c in (pub, sub):
            c.loop_stop()
            c.disconnect()
    assert bus.subscribers == 0
