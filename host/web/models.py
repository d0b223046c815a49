# Runs on CPython (host): request and response bodies of the /v1 API (pydantic v2).
"""Request and response models. Money is integer fen (``*_fen``), never a float or a string;
request bodies refuse unknown fields and non-integer amounts (HTTP 422)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    """Every error: one line saying what went wrong."""

    error: str


class CardOut(BaseModel):
    uid: str
    status: str
    replaced_by: str | None = None
    expires_at: int = 0


class PassOut(BaseModel):
    id: int
    plan: str
    kind: str
    starts_at: int
    ends_at: int
    uses_left: int | None = None
    daily_cap: int | None = None


class MemberOut(BaseModel):
    """A member with balances (principal and bonus, fen), points, passes and cards."""

    id: int
    name: str
    phone: str | None = None
    tier: str
    status: str
    principal_fen: int
    bonus_fen: int
    balance_fen: int
    points: int
    created_at: int
    last_active_at: int | None = None
    cards: list[CardOut]
    passes: list[PassOut]


class CardMemberOut(MemberOut):
    """The member a card belongs to, and that card."""

    card: CardOut


class MemberSummary(BaseModel):
    id: int
    name: str
    phone: str | None = None
    tier: str
    status: str
    balance_fen: int
    points: int


class MemberList(BaseModel):
    members: list[MemberSummary]


class TopupIn(_In):
    amount_fen: StrictInt = Field(gt=0, description="cash received, in fen")


class PassSaleIn(_In):
    plan: str = Field(min_length=1, max_length=64, description="a plan of the site policy")
    from_balance: StrictBool = Field(False, description="pay from stored value, not cash")


class RedemptionIn(_In):
    points: StrictInt = Field(gt=0)
    item: str | None = Field(None, min_length=1, max_length=100,
                             description="what the points buy (or use to_balance)")
    to_balance: StrictBool = Field(False, description="convert to bonus balance")


class RefundIn(_In):
    amount_fen: StrictInt | None = Field(None, gt=0, description="None: all principal")


class BalanceOut(BaseModel):
    member_id: int
    principal_fen: int
    bonus_fen: int
    balance_fen: int
    points: int


class TopupOut(BalanceOut):
    topup_fen: int
    bonus_added_fen: int
    referral_points: int


class PassSaleOut(BalanceOut):
    pass_id: int
    plan: str
    kind: str
    ends_at: int
    uses_left: int


class RedemptionOut(BalanceOut):
    redeemed_points: int
    credited_fen: int


class RefundOut(BalanceOut):
    refunded_fen: int
    bonus_forfeited_fen: int


class SaleItemIn(_In):
    """A product of the policy's catalogue (``GET /v1/products``) and how many."""

    product: str = Field(min_length=1, max_length=32)
    qty: StrictInt = Field(1, ge=1, le=99)


class SaleIn(_In):
    """Exactly one of: ``amount_fen`` (kiosk), ``items`` (products), ``service`` (a wash
    program). ``timeout_s``: seconds the sale stays armed (default 60). ``points``: pay part
    of it with points, ``"max"`` (as many as the policy allows) or a number of points."""

    amount_fen: StrictInt | None = Field(None, ge=1)
    items: list[SaleItemIn] = Field(default_factory=list, max_length=20)
    service: StrictInt = Field(0, ge=0, le=255)
    timeout_s: StrictInt = Field(60, ge=1, le=3600)
    points: Literal["max"] | StrictInt | None = None


class SaleOut(BaseModel):
    """A sale on a reader: ``state`` armed, paid, cancelled, expired or denied; ``points``
    what was asked to be paid with points (null, "max" or a number); ``result`` (once a tap
    settled it): verdict, reason, text, charged_fen (stored value), points_paid and
    points_paid_fen (the part paid with points), points_earned, balance_fen, points,
    member_id."""

    id: int
    device_id: str
    amount_fen: int
    service: int
    items: list[dict]
    text: str
    state: str
    created_at: int
    expires_at: int
    settled_at: int | None = None
    tap_id: int | None = None
    reason: str | None = None
    result: dict | None = None
    points: str | int | None = None


class ProductOut(BaseModel):
    id: str
    name: str
    price_fen: int
    kinds: list[str]


class ProductList(BaseModel):
    products: list[ProductOut]


class CouponOut(BaseModel):
    """A member's coupon: ``state`` open, used or expired; ``off_fen`` (amount off) or
    ``off_pct`` (percent off); ``covers`` what it pays for ("all" for everything);
    ``expires_at`` unix seconds."""

    id: int
    template: str
    kind: str
    off_fen: int | None = None
    off_pct: int | None = None
    min_spend_fen: int
    covers: str
    item: str | None = None
    expires_at: int
    source: str
    state: str


class CouponList(BaseModel):
    coupons: list[CouponOut]


class CouponIn(_In):
    """A coupon of a policy template (``tapkiosk coupon templates``)."""

    template: str = Field(..., min_length=1, max_length=64)


class CouponIssued(BaseModel):
    coupon_id: int
    member_id: int
    template: str
    kind: str
    expires_at: int


class CampaignOut(BaseModel):
    """A campaign of the policy: its window (site dates, inclusive), whether it is on today,
    and what it changes."""

    name: str
    starts: str
    ends: str
    kinds: list[str]
    active: bool
    points_multiplier: int
    extra_discount_pct: int
    ladder: list[dict]
    coupon: str | None = None


class CampaignList(BaseModel):
    campaigns: list[CampaignOut]
