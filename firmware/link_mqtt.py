# Runs on the ESP32 (and the unix port in tests): the MQTT link, Wi-Fi up then firmware/mqtt.py on tapkiosk/v1/<id>/...
#
# up     device -> host, QoS 1, the packet as payload (no COBS, no CRC)
# down   host -> device, subscribed QoS 1 (persistent session: queued while we were away)
# status retained "online" after every connect, retained "offline" as the last will
import asyncio

from protocol.compat import const, ticks_diff, ticks_ms
from mqtt import MQTTClient

_WIFI_WAIT_MS = const(20000)


def _log(*args):
    print("link:", *args)


class MqttLink:
    def __init__(self, device_id, mqtt_cfg, wifi_cfg=None, network=None):
        base = "tapkiosk/v1/" + device_id + "/"
        self.up = (base + "up").encode()
        self.down = (base + "down").encode()
        status = (base + "status").encode()
        self.wifi = wifi_cfg or {}
        self.network = network
        self.client = MQTTClient(
            device_id, mqtt_cfg["broker"], mqtt_cfg.get("port", 1883),
            mqtt_cfg.get("user"), mqtt_cfg.get("password"), mqtt_cfg.get("keepalive", 30),
            will=(status, b"offline", True, 1), birth=(status, b"online", True, 1),
            subs=((self.down, 1),))
        self.client.on_message = self._on_message
        self.on_packet = None
        self.alive = ticks_ms()

    @property
    def connected(self):
        return self.client.connected

    def _on_message(self, topic, payload):
        if topic == self.down and self.on_packet is not None:
            self.on_packet(payload)

    async def send(self, pkt):
        return await self.client.publish(self.up, pkt, 1, False)

    async def _wifi(self):
        # Bring the station interface up; without a network module (unix port) the host's
        # own network is used.
        net = self.network
        if net is None or not self.wifi.get("ssid"):
            return True
        wlan = net.WLAN(net.STA_IF)
        if wlan.isconnected():
            return True
        wlan.active(True)
        wlan.connect(self.wifi["ssid"], self.wifi.get("password") or "")
        t0 = ticks_ms()
        while not wlan.isconnected():
            self.alive = ticks_ms()
            if ticks_diff(ticks_ms(), t0) > _WIFI_WAIT_MS:
                _log("Wi-Fi", self.wifi["ssid"], "not connected after", _WIFI_WAIT_MS // 1000, "s")
                return False
            await asyncio.sleep_ms(200)
        return True

    async def run(self):
        while not await self._wifi():
            await asyncio.sleep_ms(2000)
        await self.client.run()
