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
from host.site.links.mqtt_events import EventBatcher
from host.web.events import EventBus


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
    forwarder = EventBatcher(bus, lambda batch: [pub.publish(t, p, qos=1) for t, p in batch]).start()
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


def test_service_payloads_are_json_events() -> None:
    from host.rules.engine import Decision, Tap
    from host.web.event_payloads import decision_payload, device_payload, tap_payload

    bus, tap = EventBus(), Tap("K1", 70000, "04A1B2C3D4E5F6", amount_fen=1250)
    d = Decision("grant", "ok", 0, 1, "Paid 12.50", 8750, 12, -1, 3, reply=b"\x01\x02")
    sub = bus.subscribe()
    bus.publish("tap", tap_payload(tap))
    bus.publish("decision", decision_payload(tap, d))
    bus.publish("device_offline", device_payload("K1", "kiosk", "mqtt", "1.2.0"))
    got = [json.loads(sub.get(timeout=0).json)["data"] for _ in range(3)]
    assert got[0] == {"device_id": "K1", "seq": 70000, "uid": "04A1B2C3D4E5F6", "service": 0,
                      "amount_fen": 1250, "direction": None, "offline": False}
    assert got[1]["verdict"] == "grant" and got[1]["balance_fen"] == 8750
    assert got[1]["member_id"] == 3 and "reply" not in got[1]
    assert got[2] == {"device_id": "K1", "kind": "kiosk", "link": "mqtt", "fw": "1.2.0"}


def test_publisher_builds_nothing_when_nobody_listens():
    from host.site.publish import Publisher
    from host.web.events import EventBus
    bus = EventBus()
    built = []

    def build(x):
        built.append(x)
        return {"x": x}

    pub = Publisher(bus)
    pub.publish("tap", build, 1)
    assert built == [] and pub.failed == 0
    sub = bus.subscribe(["decision"])
    pub.publish("tap", build, 2)            # a subscriber of other kinds only
    assert built == []
    pub.publish("decision", build, 3)
    assert built == [3] and bus.wanted("decision") and not bus.wanted("tap")
    sub.close()
    assert not bus.wanted("decision")


def test_a_lazy_event_is_encoded_once_when_first_read(monkeypatch) -> None:
    import host.web.events as events

    calls: list[object] = []
    real = events._ENCODE
    monkeypatch.setattr(events, "_ENCODE", lambda obj: calls.append(obj) or real(obj))
    bus = EventBus()
    sub = bus.subscribe()
    data = {"verdict": "grant", "balance_fen": 8750}
    lazy = bus.publish("decision", data, lazy=True)
    assert calls == [] and sub.get(timeout=0) is lazy
    eager = bus.publish("decision", data)
    assert len(calls) == 1
    assert json.loads(lazy.json) == {"id": lazy.id, "kind": "decision", "ts": lazy.ts,
                                     "data": data}
    assert lazy.json == lazy.json and len(calls) == 2   # encoded once, then kept
    assert lazy.json.replace(f'"id":{lazy.id}', f'"id":{eager.id}').replace(
        repr(lazy.ts), repr(eager.ts)) == eager.json


def test_the_batcher_hands_fields_to_a_link_that_encodes_them_else_json() -> None:
    bus = EventBus()
    raw: list[tuple[str, bytes]] = []
    fields: list[tuple[str, list]] = []
    accept = [True]

    def publish_events(prefix: str, events: list) -> bool:
        if accept[0]:
            fields.append((prefix, events))
        return accept[0]

    forwarder = EventBatcher(bus, raw.extend, publish_events=publish_events).start()
    try:
        first = bus.publish("tap", {"seq": 1}, lazy=True)
        wait_until(lambda: forwarder.sent == 1, 10, what="the first event forwarded")
        accept[0] = False
        second = bus.publish("tap", {"seq": 2}, lazy=True)
        wait_until(lambda: forwarder.sent == 2, 10, what="the second event forwarded")
    finally:
        forwarder.stop()
    assert fields == [("tapkiosk/v1/events", [(first.id, "tap", first.ts, {"seq": 1})])]
    assert raw == [("tapkiosk/v1/events/tap", second.json.encode())]


def test_publish_many_is_publish_of_each_under_one_wake_up() -> None:
    bus = EventBus(queue_size=3)
    every, picky = bus.subscribe(), bus.subscribe(["tap"])
    bus.publish("sale", {"n": 0})
    events = bus.publish_many("decision", [{"n": 1}, {"n": 2}, {"n": 3}])
    assert [e.id for e in events] == [2, 3, 4] and {e.kind for e in events} == {"decision"}
    assert [json.loads(e.json)["data"] for e in events] == [{"n": 1}, {"n": 2}, {"n": 3}]
    got = [every.get(timeout=0) for _ in range(4)]
    assert got[:3] == events and got[3] is None and every.dropped == 1   # the sale fell out
    assert picky.get(timeout=0) is None and picky.dropped == 0
    assert bus.publish("tap", {"n": 4}).id == 5
    assert bus.publish_many("tap", []) == [] and bus.publish("tap", {}).id == 6
