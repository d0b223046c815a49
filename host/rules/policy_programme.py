# Runs on CPython (host): the coupon and campaign sections of the site policy, validated.
"""Policy sections of the membership programme: ``[coupons.<name>]`` (coupon templates),
``[coupon_rules]`` (which template each event issues) and ``[campaigns.<name>]``
(date-ranged overrides). Read by ``host.rules.policy.build_policy``; every bad value raises
``InputError`` naming its key."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from host.errors import InputError

COUPON_KINDS = ("amount_off", "percent_off", "free_service", "gift_item")
#: What a coupon or campaign can apply to: a device kind, or one wash program.
_COVER_HINT = '"gate", "kiosk", "wash" or "wash:<program code>"'


@dataclass(frozen=True)
class CouponTemplate:
    """A kind of coupon the site issues. ``value``: fen off (amount_off) or percent off
    (percent_off); ``min_spend_fen``: the threshold (满减); ``covers``: what it pays for
    (empty = every service); ``valid_days``: how long an issued coupon is valid."""

    name: str
    kind: str
    value: int = 0
    min_spend_fen: int = 0
    covers: tuple[str, ...] = ()
    item: str = ""
    valid_days: int = 30


@dataclass(frozen=True)
class CouponRules:
    """Which template each event issues ("" = none)."""

    signup: str = ""
    first_card: str = ""
    birthday: str = ""
    birthday_days_before: int = 7
    referral: str = ""
    winback: str = ""
    winback_days: int = 60
    topup: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Campaign:
    """A date-ranged override for some device kinds: ``starts`` .. ``ends`` (inclusive, site
    dates). While on: points times ``points_multiplier``, ``extra_discount_pct`` off the
    price (after the tier price), the top-up ``ladder`` instead of the site's, and one
    ``coupon`` issued per member at their first purchase of the campaign."""

    name: str
    starts: date
    ends: date
    kinds: tuple[str, ...] = ("gate", "wash", "kiosk", "topup", "pass")
    points_multiplier: int = 1
    extra_discount_pct: int = 0
    ladder: tuple[tuple[int, int], ...] = ()
    coupon: str = ""


def valid_cover(c: Any, programs: dict[int, Any]) -> bool:
    """Whether ``c`` names something a coupon can pay for."""
    if c in ("gate", "kiosk", "wash"):
        return True
    return (isinstance(c, str) and c.startswith("wash:") and c[5:].isascii()
            and c[5:].isdigit() and int(c[5:]) in programs)


def coupon_templates(top: Any, programs: dict[int, Any]) -> dict[str, CouponTemplate]:
    """``[coupons.<name>]``."""
    from host.rules.policy import _Reader
    raw = top.get("coupons", {})
    if not isinstance(raw, dict):
        raise InputError("policy: coupons must be a table")
    out = {}
    for name, t in raw.items():
        pre = f"coupons.{name}"
        r = _Reader(t, pre)
        kind = r.choice("kind", COUPON_KINDS)
        covers = r.get("covers", [])
        if not isinstance(covers, list) or any(not valid_cover(c, programs) for c in covers):
            raise InputError(f"policy: {pre}.covers must list {_COVER_HINT}, got "
                             f"{json.dumps(covers)}")
        value = 0
        if kind == "amount_off":
            value = r.money("value")
            if value <= 0:
                raise InputError(f"policy: {pre}.value must be above 0.00")
        elif kind == "percent_off":
            value = r.integer("value", 1, 100)
        item = r.text("item") if kind == "gift_item" else ""
        out[name] = CouponTemplate(name, kind, value, r.money("min_spend", "0.00"),
                                   tuple(covers), item, r.integer("valid_days", 1, 3660, 30))
        r.done()
    return out


def coupon_rules(top: Any, templates: dict[str, CouponTemplate]) -> CouponRules:
    """``[coupon_rules]``: each named template must exist."""
    from host.rules.policy import _Reader
    r = _Reader(top.get("coupon_rules", {}), "coupon_rules")

    def template(key: str) -> str:
        v = r.get(key, "")
        if v != "" and v not in templates:
            raise InputError(f"policy: coupon_rules.{key} must name a coupon template, got "
                             f"{json.dumps(v)}")
        return v

    names = {k: template(k) for k in ("signup", "first_card", "birthday", "referral",
                                      "winback")}
    rungs = r.get("topup", [])
    if not isinstance(rungs, list):
        raise InputError("policy: coupon_rules.topup must be an array of tables")
    topup = []
    for i, rung in enumerate(rungs):
        rr = _Reader(rung, f"coupon_rules.topup[{i}]")
        mn, name = rr.money("min"), rr.get("coupon")
        if name not in templates:
            raise InputError(f"policy: coupon_rules.topup[{i}].coupon must name a coupon "
                             f"template, got {json.dumps(name)}")
        rr.done()
        topup.append((mn, name))
    out = CouponRules(**names, birthday_days_before=r.integer("birthday_days_before", 0, 60, 7),
                      winback_days=r.integer("winback_days", 1, 3660, 60),
                      topup=tuple(sorted(topup)))
    r.done()
    return out


_CAMPAIGN_KINDS = ("gate", "wash", "kiosk", "topup", "pass")


def campaigns(top: Any, templates: dict[str, CouponTemplate]) -> dict[str, Campaign]:
    """``[campaigns.<name>]``: ``starts``/``ends`` dates (YYYY-MM-DD, inclusive), ``kinds``
    (of gate, wash, kiosk, topup, pass), ``points_multiplier``, ``extra_discount_pct``,
    ``ladder`` (top-ups) and ``coupon`` (a template)."""
    from host.rules.policy import _Reader
    raw = top.get("campaigns", {})
    if not isinstance(raw, dict):
        raise InputError("policy: campaigns must be a table")
    out = {}
    for name, c in raw.items():
        pre = f"campaigns.{name}"
        r = _Reader(c, pre)
        starts, ends = _date(r, pre, "starts"), _date(r, pre, "ends")
        if ends < starts:
            raise InputError(f"policy: {pre}.ends must not be before starts")
        kinds = r.get("kinds", list(_CAMPAIGN_KINDS))
        if (not isinstance(kinds, list) or not kinds
                or any(k not in _CAMPAIGN_KINDS for k in kinds)):
            raise InputError(f"policy: {pre}.kinds must list some of "
                             f"{'|'.join(_CAMPAIGN_KINDS)}, got {json.dumps(kinds)}")
        coupon = r.get("coupon", "")
        if coupon != "" and coupon not in templates:
            raise InputError(f"policy: {pre}.coupon must name a coupon template, got "
                             f"{json.dumps(coupon)}")
        out[name] = Campaign(name, starts, ends, tuple(kinds),
                             r.integer("points_multiplier", 1, 10, 1),
                             r.integer("extra_discount_pct", 0, 99, 0),
                             _ladder(r, pre), coupon)
        r.done()
    return out


def _date(r: Any, pre: str, key: str) -> date:
    v = r.get(key)
    if isinstance(v, date):           # TOML has dates: starts = 2027-01-01
        return v
    try:
        if isinstance(v, str) and len(v) == 10:
            return date.fromisoformat(v)
    except ValueError:
        pass
    raise InputError(f"policy: {pre}.{key} must be a date YYYY-MM-DD, got {json.dumps(str(v))}")


def _ladder(r: Any, pre: str) -> tuple[tuple[int, int], ...]:
    from host.rules.policy import _Reader
    rungs = r.get("ladder", [])
    if not isinstance(rungs, list):
        raise InputError(f"policy: {pre}.ladder must be an array of tables")
    out = []
    for i, rung in enumerate(rungs):
        rr = _Reader(rung, f"{pre}.ladder[{i}]")
        out.append((rr.money("min"), rr.money("bonus")))
        rr.done()
    return tuple(sorted(out))


MESSAGE_KINDS = ("receipt", "birthday", "winback", "points_expiry")
CHANNELS = ("email", "sms")


@dataclass(frozen=True)
class Messages:
    """Member messages (``host.messages``): which ``channels`` to use, in order ("email" by
    SMTP, "sms" by an HTTP webhook for SMS/WeChat gateways; none = no messages), which
    ``kinds`` to send, and the retry rule."""

    channels: tuple[str, ...] = ()
    kinds: tuple[str, ...] = MESSAGE_KINDS
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_from: str = "tapkiosk@localhost"
    webhook_url: str = ""
    max_attempts: int = 5
    retry_minutes: int = 10
    expiry_notice_days: int = 14


def messages(top: Any) -> Messages:
    """``[messages]``."""
    from host.rules.policy import _Reader
    r = _Reader(top.get("messages", {}), "messages")

    def names(key: str, allowed: tuple[str, ...], default: list[str]) -> tuple[str, ...]:
        v = r.get(key, default)
        if not isinstance(v, list) or any(x not in allowed for x in v) or len(set(v)) != len(v):
            raise InputError(f"policy: messages.{key} must list distinct "
                             f"{'|'.join(allowed)}, got {json.dumps(v)}")
        return tuple(v)

    out = Messages(channels=names("channels", CHANNELS, []),
                   kinds=names("kinds", MESSAGE_KINDS, list(MESSAGE_KINDS)),
                   smtp_host=r.text("smtp_host", "localhost"),
                   smtp_port=r.integer("smtp_port", 1, 65535, 25),
                   smtp_from=r.text("smtp_from", "tapkiosk@localhost"),
                   webhook_url=r.get("webhook_url", ""),
                   max_attempts=r.integer("max_attempts", 1, 100, 5),
                   retry_minutes=r.integer("retry_minutes", 1, 1440, 10),
                   expiry_notice_days=r.integer("expiry_notice_days", 1, 365, 14))
    url = out.webhook_url
    if not isinstance(url, str) or (url and not url.startswith(("http://", "https://"))):
        raise InputError(f"policy: messages.webhook_url must be an http(s) URL, got "
                         f"{json.dumps(url)}")
    if "sms" in out.channels and not url:
        raise InputError("policy: messages.webhook_url is needed for the sms channel")
    r.done()
    return out
