# Runs on CPython (host): the site policy (tiers, points, stored value, passes) as validated data.
"""Policy loading and validation.

The policy is a TOML file. ``load_policy(None)`` returns the shipped defaults
(``host/rules/policy_default.toml``); ``load_policy(path)`` overlays the file on the defaults:
scalar keys override one by one, while the collections ``tiers``, ``plans``,
``wash.programs`` and ``stored_value.ladder`` replace the default collection as a whole
when the file has them. Every value is checked on load; a bad one raises ``InputError``
naming its key, e.g. ``policy: tiers.gold.discount_pct must be an integer 1..100, got "abc"``.
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from host.errors import InputError
from host.money import parse_yuan
from host.store.devices import parse_hours
from host.rules.policy_programme import (Campaign, CouponRules, CouponTemplate, Messages,
                                        campaigns, coupon_rules, coupon_templates, messages)

_REPLACED_WHOLE = {("tiers",), ("plans",), ("wash", "programs"), ("stored_value", "ladder"),
                   ("coupons",), ("campaigns",), ("coupon_rules", "topup"), ("products",)}
_DURATIONS = ("month", "quarter", "year")
_SPEND_ORDERS = ("prorated", "bonus_first", "principal_first")
_PAY_METHODS = ("pass", "punch", "balance")
_ALWAYS = "00:00-24:00"
#: What a ``[stores.NAME]`` table may override, besides ``hours`` and ``hours_exempt``.
_STORE_SECTIONS = ("wash", "gate", "kiosk", "products")
_KINDS = ("gate", "wash", "kiosk")


@dataclass(frozen=True)
class Tier:
    """A member tier: price paid in percent, the rule that upgrades a member to it (purchases
    and/or spend in a window, with a bonus) and the rule that keeps them there (保级)."""

    name: str
    rank: int
    discount_pct: int
    upgrade_purchases: int = 0
    upgrade_window_days: int = 0
    upgrade_spend_fen: int = 0
    upgrade_bonus_points: int = 0
    keep_purchases: int = 0
    keep_spend_fen: int = 0
    keep_window_days: int = 0


@dataclass(frozen=True)
class Plan:
    """A pass product: time pass, N-use punch card or discount card."""

    name: str
    kind: str
    price_fen: int
    covers: tuple[str, ...]
    duration: str = ""
    daily_cap: int = 0
    uses: int = 0
    expiry_days: int = 0
    discount_pct: int = 100


@dataclass(frozen=True)
class Referral:
    """Both sides' reward for a referral, paid at the referee's first purchase (top-up or
    pass) of at least ``min_purchase_fen``."""

    referrer_points: int = 0
    referrer_bonus_fen: int = 0
    referee_points: int = 0
    referee_bonus_fen: int = 0
    min_purchase_fen: int = 0


@dataclass(frozen=True)
class Program:
    """A wash program selected by the service code."""

    code: int
    name: str
    price_fen: int


@dataclass(frozen=True)
class PointsPayment:
    """Paying part of a sale with points (``[points_payment]``): ``points_per_yuan`` points
    pay 1.00 yuan (it divides 100, so one point is ``fen_per_point`` whole fen); at most
    ``max_share_pct`` of the price after discounts and coupons; never fewer than
    ``min_points``; ``short`` says what a request for more points than the member has does
    ("partial": uses what they have, "deny": refuses the tap)."""

    enabled: bool = False
    points_per_yuan: int = 100
    max_share_pct: int = 50
    min_points: int = 1
    short: str = "partial"
    kinds: tuple[str, ...] = ("kiosk",)

    @property
    def fen_per_point(self) -> int:
        """What one point pays, in fen."""
        return 100 // self.points_per_yuan


@dataclass(frozen=True)
class Product:
    """A product of the sales catalogue (``[products.<id>]``): sold on readers of ``kinds``."""

    id: str
    name: str
    price_fen: int
    kinds: tuple[str, ...] = ("kiosk",)


@dataclass(frozen=True)
class Policy:
    """The validated site policy. Build it with ``load_policy()``."""

    timezone: str
    default_tier: str
    tiers: dict[str, Tier]
    points_per_yuan: int
    birthday_multiplier: int
    member_day: int
    member_day_multiplier: int
    combine: str
    convert_points_per_yuan: int
    points_expiry_months: int
    referral_bonus: int
    gift_min: int
    spend_order: str
    bonus_expiry_days: int
    max_balance_fen: int
    ladder: tuple[tuple[int, int], ...]
    wash_order: tuple[str, ...]
    wash_relay_ms: int
    programs: dict[int, Program]
    gate_order: tuple[str, ...]
    gate_price_fen: int
    gate_relay_ms: int
    kiosk_relay_ms: int
    kiosk_max_fen: int
    plans: dict[str, Plan]
    dormant_days: int
    retention_days: int
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: "uid" (plain cards accepted on their UID) or "sun" (only secure cards); a card
    #: enrolled secure always needs its SUN proof (host/SECURE.md).
    security_mode: str = "uid"
    #: Hours after which a gate entry without an exit no longer counts as inside
    #: (anti-passback); 0 = never.
    presence_expiry_hours: int = 12
    referral: Referral = field(default_factory=Referral)
    #: A purchase below this neither counts as qualifying nor towards tier spend.
    tier_min_purchase_fen: int = 0
    coupon_templates: dict[str, CouponTemplate] = field(default_factory=dict)
    coupon_rules: CouponRules = field(default_factory=CouponRules)
    campaigns: dict[str, Campaign] = field(default_factory=dict)
    messages: Messages = field(default_factory=Messages)
    #: False: a member receives points gifts from one other member only.
    gift_pooling: bool = True
    #: The sales catalogue (``[products]``), by product id, in file order.
    products: dict[str, Product] = field(default_factory=dict)
    #: Paying part of a sale with points (``[points_payment]``).
    points_payment: PointsPayment = field(default_factory=PointsPayment)
    #: Per-store overrides of a chain (``[stores.NAME]``), by store name.
    stores: dict[str, "StorePolicy"] = field(default_factory=dict)
    #: What a store's daemon may grant while the chain's database is unreachable.
    offline: "OfflineAllowance" = field(default_factory=lambda: OfflineAllowance())

    @property
    def tz(self) -> ZoneInfo:
        """The site time zone."""
        return ZoneInfo(self.timezone)

    def tiers_by_rank(self) -> list[Tier]:
        """Tiers from lowest to highest rank."""
        return sorted(self.tiers.values(), key=lambda t: t.rank)

    def upgrade_purchases_above(self, tier: str | None) -> int:
        """The fewest purchases an upgrade rule of a tier ranked above ``tier`` needs (a
        spend-only rule needs one; None or an unknown tier: every tier's rules; 1 << 62 when
        no tier above has a rule). Below it no upgrade is possible: purchases in any window
        are at most the lifetime purchases."""
        floors = self._upgrade_floors
        return floors.get(tier, floors[None])

    @cached_property
    def _upgrade_floors(self) -> dict[str | None, int]:
        """``upgrade_purchases_above`` of every tier and of None, computed once."""
        def above(rank: float) -> int:
            return min((max(t.upgrade_purchases, 1) for t in self.tiers.values()
                        if t.rank > rank and (t.upgrade_purchases or t.upgrade_spend_fen)),
                       default=1 << 62)
        floors: dict[str | None, int] = {name: above(t.rank) for name, t in self.tiers.items()}
        floors[None] = above(float("-inf"))
        return floors

    def for_store(self, store: str | None) -> "Policy":
        """The policy a tap at a reader of ``store`` is decided by: this one with the
        store's ``[stores.NAME]`` overrides (this one itself for no store, or a store with
        no overrides)."""
        sp = self.stores.get(store) if store is not None else None
        return sp.policy if sp is not None else self


@dataclass(frozen=True)
class OfflineAllowance:
    """``[offline]``: while the chain's database is unreachable, a store's daemon grants a
    member at most ``allowance_fen`` of stored value per outage (0: none), and time passes
    (``passes``) and punch-card uses (``punch``) its last snapshot shows."""

    allowance_fen: int = 0
    passes: bool = True
    punch: bool = True


@dataclass(frozen=True)
class StorePolicy:
    """One store's overrides (``[stores.NAME]``): its opening hours, the device kinds they
    do not bind, and the whole policy with its prices, programmes and products applied."""

    name: str
    hours: str
    hours_exempt: tuple[str, ...]
    policy: Policy

    def hours_for(self, kind: str) -> str:
        """The store hours a reader of ``kind`` obeys (always open when exempt)."""
        return _ALWAYS if kind in self.hours_exempt else self.hours


def _merge(base: dict[str, Any], over: dict[str, Any], path: tuple[str, ...] = ()) -> dict:
    out = dict(base)
    for k, v in over.items():
        p = path + (k,)
        if isinstance(v, dict) and isinstance(out.get(k), dict) and p not in _REPLACED_WHOLE:
            out[k] = _merge(out[k], v, p)
        else:
            out[k] = copy.deepcopy(v)
    return out


class _Reader:
    """Typed access to one TOML table, naming the full key in every error."""

    def __init__(self, table: Any, prefix: str) -> None:
        if not isinstance(table, dict):
            raise InputError(f"policy: {prefix} must be a table")
        self.t, self.prefix, self.seen = table, prefix, set()

    def _name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        if key not in self.t:
            if default is None:
                raise InputError(f"policy: {self._name(key)} is missing")
            return default
        return self.t[key]

    def integer(self, key: str, lo: int, hi: int, default: int | None = None) -> int:
        v = self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise InputError(f"policy: {self._name(key)} must be an integer {lo}..{hi}, "
                             f"got {json.dumps(v)}")
        return v

    def money(self, key: str, default: str | None = None) -> int:
        v = self.get(key, default)
        try:
            return parse_yuan(v)
        except InputError:
            raise InputError(f"policy: {self._name(key)} must be yuan as a string like "
                             f"\"25.00\", got {json.dumps(v)}") from None

    def choice(self, key: str, options: tuple[str, ...], default: str | None = None) -> str:
        v = self.get(key, default)
        if v not in options:
            raise InputError(f"policy: {self._name(key)} must be one of "
                             f"{'|'.join(options)}, got {json.dumps(v)}")
        return v

    def text(self, key: str, default: str | None = None) -> str:
        v = self.get(key, default)
        if not isinstance(v, str) or not v or len(v) > 64:
            raise InputError(f"policy: {self._name(key)} must be text (1-64 chars), "
                             f"got {json.dumps(v)}")
        return v

    def order(self, key: str, default: list[str] | None = None) -> tuple[str, ...]:
        v = self.get(key, default)
        if (not isinstance(v, list) or not v or len(set(map(str, v))) != len(v)
                or any(x not in _PAY_METHODS for x in v)):
            raise InputError(f"policy: {self._name(key)} must be a list of distinct "
                             f"{'|'.join(_PAY_METHODS)}, got {json.dumps(v)}")
        return tuple(v)

    def done(self) -> None:
        extra = sorted(set(self.t) - self.seen)
        if extra:
            raise InputError(f"policy: unknown key {self._name(extra[0])}")


def _default_raw() -> dict[str, Any]:
    text = resources.files("host.rules").joinpath("policy_default.toml").read_text("utf-8")
    return tomllib.loads(text)


def load_policy(path: str | None = None) -> Policy:
    """Load the policy: defaults, overlaid with the TOML file at ``path`` if given.

    Raises InputError (naming the bad key) for an unreadable file, bad TOML, a missing,
    unknown or invalid key.
    """
    raw = _default_raw()
    if path is not None:
        try:
            with open(path, "rb") as f:
                user = tomllib.load(f)
        except OSError as e:
            raise InputError(f"policy: cannot read {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"policy: {path} is not valid TOML: {e}") from None
        raw = _merge(raw, user)
    return build_policy(raw)


def build_policy(raw: dict[str, Any]) -> Policy:
    """Validate a policy dict (already merged with defaults) into a ``Policy``.

    Sections are checked in file order, so the first bad key is the one reported."""
    top = _Reader(raw, "")
    fields: dict[str, Any] = {}
    fields.update(_site_section(top))
    fields.update(_tiers_section(top, fields["default_tier"]))
    fields.update(_points_section(top))
    fields.update(_stored_value_section(top))
    fields.update(_wash_section(top))
    fields.update(_gate_kiosk_sections(top))
    fields["plans"] = _plans_section(top, fields["programs"])
    fields["products"] = _products_section(top)
    fields["points_payment"] = _points_payment_section(top)
    d = _Reader(top.get("dormant"), "dormant")
    fields["dormant_days"] = d.integer("days", 1, 3660)
    d.done()
    priv = _Reader(top.get("privacy", {"retention_days": 730}), "privacy")
    fields["retention_days"] = priv.integer("retention_days", 30, 3660)
    priv.done()
    fields["referral"] = _referral_section(top, fields["referral_bonus"])
    tr = _Reader(top.get("tier_rules", {}), "tier_rules")
    fields["tier_min_purchase_fen"] = tr.money("min_purchase", "0.00")
    tr.done()
    fields["coupon_templates"] = coupon_templates(top, fields["programs"])
    fields["coupon_rules"] = coupon_rules(top, fields["coupon_templates"])
    fields["campaigns"] = campaigns(top, fields["coupon_templates"])
    fields["messages"] = messages(top)
    sec = _Reader(top.get("security", {"mode": "uid"}), "security")
    fields["security_mode"] = sec.choice("mode", ("uid", "sun"))
    sec.done()
    fields["stores"] = _stores_section(top, raw)
    fields["offline"] = _offline_section(top)
    top.done()
    return Policy(raw=raw, **fields)


def _stores_section(top: _Reader, raw: dict[str, Any]) -> dict[str, StorePolicy]:
    """``[stores.NAME]``: per-store ``hours`` (HH:MM-HH:MM; a tap outside them is denied
    ``closed``; a gate's exit never is), ``hours_exempt`` (device kinds the store hours do not
    bind, default none) and overrides of ``wash`` (order, programmes and their prices),
    ``gate``, ``kiosk`` and ``products``, merged key by key over the chain's policy (a
    programme or product named here changes that one; the others stay the chain's) and
    validated like the chain's. Unknown keys are refused; a store name
    that is not in the chain's database is refused by :func:`check_stores`."""
    table = top.get("stores", {})
    if not isinstance(table, dict):
        raise InputError("policy: stores must be a table of [stores.NAME] tables")
    base = {k: v for k, v in raw.items() if k != "stores"}
    out: dict[str, StorePolicy] = {}
    for name, over in table.items():
        r = _Reader(over, f"stores.{name}")
        if not (1 <= len(name) <= 32 and name.isascii()
                and all(c.isalnum() or c in "_-" for c in name)):
            raise InputError(f"policy: stores.{name} must be a store name of 1-32 letters, "
                             "digits, _ -")
        hours = r.get("hours", _ALWAYS)
        try:
            parse_hours(hours)
        except InputError:
            raise InputError(f"policy: stores.{name}.hours must be HH:MM-HH:MM, e.g. "
                             f"\"08:00-22:00\", got {json.dumps(hours)}") from None
        exempt = r.get("hours_exempt", [])
        if not isinstance(exempt, list) or any(k not in _KINDS for k in exempt):
            raise InputError(f"policy: stores.{name}.hours_exempt must list device kinds "
                             f"{'|'.join(_KINDS)}, got {json.dumps(exempt)}")
        sections = {k: r.get(k) for k in _STORE_SECTIONS if k in over}
        r.done()
        try:
            # Merged table by table (a programme or product named here overrides that one
            # only, the others stay the chain's): the path prefix keeps _REPLACED_WHOLE out.
            policy = build_policy(_merge(base, sections, ("stores",)))
        except InputError as e:
            raise InputError(str(e).replace("policy: ", f"policy: stores.{name}.", 1)) from None
        out[name] = StorePolicy(name, hours, tuple(exempt), policy)
    return out


def _offline_section(top: _Reader) -> OfflineAllowance:
    """``[offline]``: ``allowance`` (yuan, per member per outage, default "0.00": no stored
    value is spent offline), ``passes`` and ``punch`` (true/false, default true)."""
    r = _Reader(top.get("offline", {}), "offline")
    allowance = r.money("allowance", "0.00")
    flags = {k: r.get(k, True) for k in ("passes", "punch")}
    for k, v in flags.items():
        if not isinstance(v, bool):
            raise InputError(f"policy: offline.{k} must be true or false, got {json.dumps(v)}")
    if allowance > 1_000_000_00:
        raise InputError("policy: offline.allowance must be at most 1000000.00")
    r.done()
    return OfflineAllowance(allowance, flags["passes"], flags["punch"])


def check_stores(policy: Policy, names: list[str]) -> None:
    """InputError when the policy overrides a store that is not one of ``names`` (the
    stores of the chain's database, ``host.store.stores.store_names``)."""
    unknown = sorted(set(policy.stores) - set(names))
    if unknown:
        raise InputError(f"policy: stores.{unknown[0]} names no store of this chain (stores: "
                         f"{', '.join(names) or 'none'}; add it with: tapkiosk store add "
                         f"{unknown[0]})")


def _site_section(top: _Reader) -> dict[str, Any]:
    site = _Reader(top.get("site"), "site")
    tz = site.text("timezone")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"policy: site.timezone is not a known time zone, got {json.dumps(tz)}") from None
    default_tier = site.text("default_tier")
    site.done()
    return {"timezone": tz, "default_tier": default_tier}


def _tiers_section(top: _Reader, default_tier: str) -> dict[str, Any]:
    tiers_raw = top.get("tiers")
    if not isinstance(tiers_raw, dict) or not tiers_raw:
        raise InputError("policy: tiers must be a table with at least one tier")
    tiers: dict[str, Tier] = {}
    for name, t in tiers_raw.items():
        r = _Reader(t, f"tiers.{name}")
        tiers[name] = t = Tier(
            name, r.integer("rank", 1, 100), r.integer("discount_pct", 1, 100),
            upgrade_purchases=r.integer("upgrade_purchases", 0, 10_000, 0),
            upgrade_window_days=r.integer("upgrade_window_days", 0, 3660, 0),
            upgrade_spend_fen=r.money("upgrade_spend", "0.00"),
            upgrade_bonus_points=r.integer("upgrade_bonus_points", 0, 1_000_000, 0),
            keep_purchases=r.integer("keep_purchases", 0, 10_000, 0),
            keep_spend_fen=r.money("keep_spend", "0.00"),
            keep_window_days=r.integer("keep_window_days", 0, 3660, 0))
        if (t.upgrade_purchases or t.upgrade_spend_fen) and not t.upgrade_window_days:
            raise InputError(f"policy: tiers.{name}.upgrade_window_days must be set with "
                             "upgrade_purchases or upgrade_spend")
        if (t.keep_purchases or t.keep_spend_fen) and not t.keep_window_days:
            raise InputError(f"policy: tiers.{name}.keep_window_days must be set with "
                             "keep_purchases or keep_spend")
        r.done()
    if len({t.rank for t in tiers.values()}) != len(tiers):
        raise InputError("policy: tiers.*.rank must be distinct")
    if default_tier not in tiers:
        raise InputError(f"policy: site.default_tier must name a tier, got {json.dumps(default_tier)}")
    return {"tiers": tiers}


def _points_section(top: _Reader) -> dict[str, Any]:
    p = _Reader(top.get("points"), "points")
    points = dict(
        points_per_yuan=p.integer("per_yuan", 0, 1000),
        birthday_multiplier=p.integer("birthday_multiplier", 1, 10),
        member_day=p.integer("member_day", 0, 28),
        member_day_multiplier=p.integer("member_day_multiplier", 1, 10),
        combine=p.choice("combine", ("max", "multiply")),
        convert_points_per_yuan=p.integer("convert_points_per_yuan", 1, 100_000),
        points_expiry_months=p.integer("expiry_months", 0, 120),
        referral_bonus=p.integer("referral_bonus", 0, 1_000_000, 0),
        gift_min=p.integer("gift_min", 1, 1_000_000),
        gift_pooling=p.get("gift_pooling", True),
    )
    if not isinstance(points["gift_pooling"], bool):
        raise InputError(f"policy: points.gift_pooling must be true or false, got "
                         f"{json.dumps(points['gift_pooling'])}")
    p.done()
    return points


def _points_payment_section(top: _Reader) -> PointsPayment:
    """``[points_payment]`` (absent: paying with points is off)."""
    r = _Reader(top.get("points_payment", {"enabled": False}), "points_payment")
    enabled = r.get("enabled", False)
    if not isinstance(enabled, bool):
        raise InputError(f"policy: points_payment.enabled must be true or false, got "
                         f"{json.dumps(enabled)}")
    per_yuan = r.integer("points_per_yuan", 1, 100, 100)
    if 100 % per_yuan:
        raise InputError(f"policy: points_payment.points_per_yuan must divide 100 (one point "
                         f"is whole fen): 1, 2, 4, 5, 10, 20, 25, 50 or 100, got {per_yuan}")
    kinds = r.get("kinds", ["kiosk"])
    if (not isinstance(kinds, list) or not kinds
            or any(k not in ("kiosk", "wash") for k in kinds)):
        raise InputError(f"policy: points_payment.kinds must list \"kiosk\" and/or \"wash\", "
                         f"got {json.dumps(kinds)}")
    out = PointsPayment(enabled, per_yuan, r.integer("max_share_pct", 1, 100, 50),
                        r.integer("min_points", 1, 1_000_000, 1),
                        r.choice("short", ("partial", "deny"), "partial"), tuple(kinds))
    r.done()
    return out


def _referral_section(top: _Reader, legacy_points: int) -> Referral:
    """``[referral]``; the older ``points.referral_bonus``, when set, is the referrer's
    points."""
    r = _Reader(top.get("referral", {}), "referral")
    points = r.integer("referrer_points", 0, 1_000_000, 0)
    out = Referral(
        referrer_points=legacy_points or points,
        referrer_bonus_fen=r.money("referrer_bonus", "0.00"),
        referee_points=r.integer("referee_points", 0, 1_000_000, 0),
        referee_bonus_fen=r.money("referee_bonus", "0.00"),
        min_purchase_fen=r.money("min_purchase", "0.00"))
    r.done()
    return out


def _stored_value_section(top: _Reader) -> dict[str, Any]:
    sv = _Reader(top.get("stored_value"), "stored_value")
    spend_order = sv.choice("spend_order", _SPEND_ORDERS)
    bonus_expiry_days = sv.integer("bonus_expiry_days", 0, 3660)
    max_balance = sv.money("max_balance")
    ladder_raw = sv.get("ladder", [])
    if not isinstance(ladder_raw, list):
        raise InputError("policy: stored_value.ladder must be an array of tables")
    ladder = []
    for i, rung in enumerate(ladder_raw):
        r = _Reader(rung, f"stored_value.ladder[{i}]")
        mn, bonus = r.money("min"), r.money("bonus")
        if mn <= 0:
            raise InputError(f"policy: stored_value.ladder[{i}].min must be above 0.00")
        r.done()
        ladder.append((mn, bonus))
    ladder.sort()
    if len({m for m, _ in ladder}) != len(ladder):
        raise InputError("policy: stored_value.ladder has two rungs with the same min")
    sv.done()
    return {"spend_order": spend_order, "bonus_expiry_days": bonus_expiry_days,
            "max_balance_fen": max_balance, "ladder": tuple(ladder)}


def _wash_section(top: _Reader) -> dict[str, Any]:
    w = _Reader(top.get("wash"), "wash")
    wash_order = w.order("order")
    wash_relay = w.integer("relay_ms", 0, 60_000)
    progs_raw = w.get("programs")
    if not isinstance(progs_raw, dict):
        raise InputError("policy: wash.programs must be a table")
    programs: dict[int, Program] = {}
    for code, pr in progs_raw.items():
        if not (isinstance(code, str) and code.isascii() and code.isdigit()
                and 1 <= int(code) <= 255):
            raise InputError(f"policy: wash.programs.{code} must be a service code 1..255")
        r = _Reader(pr, f"wash.programs.{code}")
        programs[int(code)] = Program(int(code), r.text("name"), r.money("price"))
        r.done()
    w.done()
    return {"wash_order": wash_order, "wash_relay_ms": wash_relay, "programs": programs}


def _gate_kiosk_sections(top: _Reader) -> dict[str, Any]:
    g = _Reader(top.get("gate"), "gate")
    out = {"gate_order": g.order("order"), "gate_price_fen": g.money("price", "0.00"),
           "gate_relay_ms": g.integer("relay_ms", 0, 60_000),
           "presence_expiry_hours": g.integer("presence_expiry_hours", 0, 8760, 12)}
    g.done()
    k = _Reader(top.get("kiosk"), "kiosk")
    out.update(kiosk_relay_ms=k.integer("relay_ms", 0, 60_000),
               kiosk_max_fen=k.money("max_amount"))
    k.done()
    return out


def _plans_section(top: _Reader, programs: dict[int, Program]) -> dict[str, Plan]:
    plans_raw = top.get("plans", {})
    if not isinstance(plans_raw, dict):
        raise InputError("policy: plans must be a table")
    return {name: _plan(name, pl, programs) for name, pl in plans_raw.items()}


def _plan(name: str, pl: Any, programs: dict[int, Program]) -> Plan:
    pre = f"plans.{name}"
    r = _Reader(pl, pre)
    kind = r.choice("kind", ("time", "punch", "discount"))
    covers = r.get("covers")
    if (not isinstance(covers, list) or not covers
            or any(not _valid_cover(c, programs) for c in covers)):
        raise InputError(f"policy: {pre}.covers must list \"gate\", \"kiosk\" or "
                         f"\"wash:<program code>\", got {json.dumps(covers)}")
    kw: dict[str, Any] = dict(name=name, kind=kind, price_fen=r.money("price"),
                              covers=tuple(covers))
    if kind == "time":
        kw.update(duration=r.choice("duration", _DURATIONS),
                  daily_cap=r.integer("daily_cap", 0, 1000, 0))
    elif kind == "punch":
        kw.update(uses=r.integer("uses", 1, 10_000), expiry_days=r.integer("expiry_days", 0, 3660, 0),
                  daily_cap=r.integer("daily_cap", 0, 1000, 0))
    else:
        kw.update(duration=r.choice("duration", _DURATIONS),
                  discount_pct=r.integer("discount_pct", 1, 100))
    r.done()
    return Plan(**kw)


def _products_section(top: _Reader) -> dict[str, Product]:
    raw = top.get("products", {})
    if not isinstance(raw, dict):
        raise InputError("policy: products must be a table")
    out: dict[str, Product] = {}
    for pid, pr in raw.items():
        if not (isinstance(pid, str) and 1 <= len(pid) <= 32 and pid.isascii()
                and all(c.isalnum() or c in "_-" for c in pid)):
            raise InputError(f"policy: products.{pid} must be an id of 1-32 letters, digits, _ -")
        r = _Reader(pr, f"products.{pid}")
        kinds = r.get("kinds", ["kiosk"])
        if (not isinstance(kinds, list) or not kinds
                or any(k not in ("kiosk", "wash") for k in kinds)):
            raise InputError(f"policy: products.{pid}.kinds must list \"kiosk\" and/or "
                             f"\"wash\", got {json.dumps(kinds)}")
        prod = Product(pid, r.text("name"), r.money("price"), tuple(kinds))
        if prod.price_fen <= 0:
            raise InputError(f"policy: products.{pid}.price must be above 0.00")
        r.done()
        out[pid] = prod
    return out


def _valid_cover(c: Any, programs: dict[int, Program]) -> bool:
    if c in ("gate", "kiosk"):
        return True
    if isinstance(c, str) and c.startswith("wash:") and c[5:].isascii() and c[5:].isdigit():
        return int(c[5:]) in programs
    return False


def policy_and_clock(policy: Policy | None, clock: Callable[[], datetime] | None
                     ) -> tuple[Policy, Callable[[], datetime]]:
    """The defaults the engine and the admin writes share: the shipped policy when none is
    given, and a clock reading "now" in the policy's time zone when none is injected."""
    policy = policy if policy is not None else load_policy()
    tz = policy.tz
    return policy, clock if clock is not None else (lambda: datetime.now(tz))
