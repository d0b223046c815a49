# Runs on CPython (pytest): the admin boundary — ids and amounts beyond SQLite's range.
"""Integers SQLite cannot hold (>= 2**63) are refused as InputError, nothing written."""

from __future__ import annotations

import pytest

from host.admin import Admin
from host.errors import InputError
from host.store.db import open_db

HUGE = 2**63


@pytest.fixture
def admin() -> Admin:
    return Admin(open_db(None))


@pytest.mark.parametrize("write", [
    lambda a, m: a.topup(HUGE, 100),
    lambda a, m: a.topup(m, HUGE),
    lambda a, m: a.refund(HUGE, 100),
    lambda a, m: a.refund(m, HUGE),
    lambda a, m: a.reverse(HUGE),
    lambda a, m: a.edit_member(HUGE, name="x"),
    lambda a, m: a.add_member("x", referrer_id=HUGE, consent_terms="t1"),
    lambda a, m: a.enroll_card(HUGE, "04A1B2C3"),
    lambda a, m: a.enroll_card(m, "04A1B2C3", expires_at=HUGE),
    lambda a, m: a.sell_pass(HUGE, "wash10"),
    lambda a, m: a.redeem_points(m, HUGE, item="mug"),
    lambda a, m: a.gift_points(m, HUGE, 100),
    lambda a, m: a.gift_points(HUGE, m, 100),
], ids=["topup-member", "topup-amount", "refund-member", "refund-amount", "reverse",
        "edit", "referrer", "enroll-member", "enroll-expiry", "pass", "redeem", "gift-to",
        "gift-from"])
def test_huge_integers_are_input_errors(admin: Admin, write) -> None:
    m = admin.add_member("Ann", consent_terms="t1")["member_id"]
    before = admin.db.execute("SELECT count(*) FROM ops").fetchone()[0], \
        admin.db.execute("SELECT count(*) FROM ledger").fetchone()[0]
    with pytest.raises(InputError):
        write(admin, m)
    after = admin.db.execute("SELECT count(*) FROM ops").fetchone()[0], \
        admin.db.execute("SELECT count(*) FROM ledger").fetchone()[0]
    assert after == before


def test_member_row_is_named(admin: Admin) -> None:
    from host.admin.core import MemberRow
    from host.store.db import transaction

    m = admin.add_member("Ann", birthday="03-04", consent_terms="t1")["member_id"]
    with transaction(admin.db) as conn:
        row = admin.member(conn, m)
    assert isinstance(row, MemberRow)
    assert (row.id, row.name, row.status, row.birthday, row.referrer_id) == \
        (m, "A*", "active", "03", None)  # the masked name and the birth month only
