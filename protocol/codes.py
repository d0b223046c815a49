# Runs on both CPython and MicroPython: numeric codes shared by the wire and the host.
# The host speaks in names ("insufficient_balance"); the wire carries the numbers.

# Device kinds (HELLO).
KINDS = ("", "gate", "wash", "kiosk")

# DECISION verdicts.
DENY = 0
GRANT = 1

# DECISION reason codes. Index = code on the wire. Append only: never renumber.
REASONS = (
    "ok",                    # 0
    "unknown_card",          # 1
    "blocked",               # 2  card blocked by the operator
    "lost",                  # 3  card reported lost (replaced)
    "expired",               # 4  card or membership expired
    "insufficient_balance",  # 5
    "no_pass",               # 6  no pass, punch card or balance covers this service
    "passback",              # 7  anti-passback: already inside / not inside
    "duplicate",             # 8  same card again within the duplicate-tap window
    "closed",                # 9  outside opening hours
    "daily_cap",             # 10 pass used up for today
    "offline",               # 11 device was offline; decision taken by the device
    "bad_service",           # 12 unknown service code for this device
    "cloned",                # 13 secure card: UID does not match the card's proof
    "card_replay",           # 14 secure card: SUN counter not fresh
    "secure_required",       # 15 site or card requires a secure card, got a plain UID
    "invalid_amount",        # 16 amount missing, zero or out of range
    "member_inactive",       # 17 member suspended or deleted
    "unknown_device",        # 18 tap from a device the host does not serve
    "internal",              # 19 host fault; nothing was charged
    "voided",                # 20 the device gave up on this tap (VOID): nothing charged
    "no_sale",               # 21 kiosk: no sale armed on this reader (or another one than shown)
)

# Feedback patterns (DECISION.pattern, and the firmware's own offline patterns).
PAT_NONE = 0
PAT_GRANT = 1          # green, short beep
PAT_DENY = 2           # red, long beep
PAT_OFFLINE_GRANT = 3  # green blinking, two short beeps
PAT_OFFLINE_DENY = 4   # red blinking, three short beeps
PAT_FAULT = 5          # amber: reader or link fault
PAT_SALE = 6           # green blinking: a sale is armed, tap to pay (firmware/sale.py)

# ERROR codes (host -> device).
ERR_MALFORMED = 1
ERR_BAD_MAC = 2
ERR_UNKNOWN_DEVICE = 3
ERR_REPLAY = 4
ERR_UNSUPPORTED = 5
ERR_INTERNAL = 6
ERRORS = ("", "malformed", "bad_mac", "unknown_device", "replay", "unsupported", "internal")

# EVENT codes (device -> host).
EV_BOOT = 1            # value = reset cause
EV_READER_FAULT = 2    # value = consecutive failures; text = what failed
EV_READER_OK = 3       # reader answered again after a fault (value = resets needed)
EV_TAMPER = 4
EV_OUTBOX_FULL = 5     # value = taps dropped
EV_CONFIG_APPLIED = 6  # value = config version
EV_LINK_DOWN = 7       # value = seconds the link was down
EV_BUTTON = 8          # wash: program button pressed (value = program code); the host arms it
EV_UPDATE_APPLIED = 9  # value = update id; text = the app version now running (on trial)
EV_UPDATE_ROLLBACK = 10  # value = update id; text = why the new app was rolled back
EVENTS = ("", "boot", "reader_fault", "reader_ok", "tamper", "outbox_full", "config_applied",
          "link_down", "button", "update_applied", "update_rollback")


def reason_code(name):
    # Name -> wire code; unknown names map to "internal" so a host bug never crashes a reply.
    try:
        return REASONS.index(name)
    except ValueError:
        return REASONS.index("internal")


def reason_name(code):
    if 0 <= code < len(REASONS):
        return REASONS[code]
    return "code%d" % code
