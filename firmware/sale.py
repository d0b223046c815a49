# Runs on the ESP32 (and the unix port in tests): the sale armed on this reader — display, blinking LED, timeout, cancel.
#
# Kiosk and wash readers only (a gate sells nothing and does not load this module). The host
# arms a sale (SALE frame, protocol/README.md "Sales"): the display shows its text ("Pay 24.00
# 请刷卡"), the LED blinks until it ends, and the next TAP carries its id and amount
# (tappath.py). It ends when the DECISION for its id arrives, when the host clears it (SALE with
# amount 0 and the same id), or after timeout_s. A SALE that arrives while a card is on the
# reader applies to the NEXT presentation: the reader only reports a card that came anew, and
# a TAP already on its way keeps what it carried. One long-lived task; nothing allocated.
import asyncio

from protocol.compat import const, ticks_diff, ticks_ms

_PAT_SALE = const(6)
_BLINK_MS = const(1000)
_IDLE_MS = const(250)


class Sale:
    def __init__(self, feedback):
        self.fb = feedback
        self.id = 0            # 0 = no sale
        self.amount = 0
        self.service = 0
        self._at = 0
        self._ms = 0

    def active(self):
        if self.id and ticks_diff(ticks_ms(), self._at) >= self._ms:
            self.end("Sale timed out 已超时")
        return self.id != 0

    def on_sale(self, f):
        if not f["amount"]:
            if f["sale_id"] == self.id:
                self.end("Cancelled 已取消")
            return
        self.id = f["sale_id"]
        self.amount = f["amount"]
        self.service = f["service"]
        self._at = ticks_ms()
        self._ms = f["timeout_s"] * 1000
        self.fb.show(_PAT_SALE, 0, f["text"])

    def settled(self, sale_id):
        # The DECISION of a tap that named sale_id arrived: that sale is over either way.
        if sale_id and sale_id == self.id:
            self.id = 0

    def end(self, text):
        if self.id:
            self.id = 0
            self.fb.show(0, 0, text)

    async def run(self):
        # Blinks while a sale is armed and ends it on time (a lost cancel still ends it).
        while True:
            if self.active():
                self.fb.show(_PAT_SALE)
                await asyncio.sleep_ms(_BLINK_MS)
            else:
                await asyncio.sleep_ms(_IDLE_MS)
