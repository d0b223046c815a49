# Runs on both CPython and MicroPython (used by the host): per-device sequence and replay window.
#
# Rules (protocol/README.md, "Sequence numbers"):
# - a frame whose seq is above the highest accepted is new;
# - a frame whose seq and bytes equal a recent accepted frame is a retransmission: the caller
#   sends the cached reply byte for byte and applies nothing;
# - a TAP or VOID (the two frames an outbox holds) below the highest but at or above the
#   device's resend floor (announced in its last HELLO: the oldest seq still in its outbox) is
#   a late outbox delivery: accepted, and the store's UNIQUE(device, seq) decides whether it
#   was already applied;
# - anything else is a replay and is refused.
from protocol.errors import ReplayError

NEW = 1
LATE = 2
RETRANSMIT = 3


class ReplayWindow:
    def __init__(self, highest=0, floor=0, cache_size=16):
        self.highest = highest
        self.floor = floor
        self._size = cache_size
        self._cache = {}   # seq -> (raw, reply)
        self._order = []   # seqs, oldest first

    def check(self, seq, raw, is_tap=False):
        # Returns (NEW | LATE, None) or (RETRANSMIT, reply); raises ReplayError.
        # is_tap: the frame is a TAP or a VOID, i.e. it may come late from the outbox.
        hit = self._cache.get(seq)
        if hit is not None:
            if hit[0] == raw:
                return RETRANSMIT, hit[1]
            raise ReplayError("seq %d reused with different content" % seq)
        if seq > self.highest:
            return NEW, None
        if is_tap and self.floor and self.floor <= seq:
            return LATE, None
        raise ReplayError("seq %d is not above %d" % (seq, self.highest))

    def accept(self, seq, raw, reply):
        # Record an applied frame and the reply that was sent for it.
        if seq > self.highest:
            self.highest = seq
        if seq not in self._cache:
            self._order.append(seq)
        self._cache[seq] = (bytes(raw), reply)
        while len(self._order) > self._size:
            del self._cache[self._order.pop(0)]

    def hello(self, seq, resend_floor):
        # A fresh, authenticated HELLO sets the floor for late outbox deliveries.
        self.floor = resend_floor if 0 < resend_floor <= seq else 0
