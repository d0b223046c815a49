# Runs on CPython (pytest): the console's coupons (member page, a manager's idempotent, audited issue) and campaigns page.
"""The member page lists the member's coupons; a manager issues one from there (CSRF, the
page's key: a re-posted form issues once, one audit row); a cashier sees no form and a direct
post is refused 403; the campaigns page shows the policy's campaigns, read-only."""

from __future__ import annotations

import re
from datetime import date, timedelta

from console_support import ConsoleSite

from host.rules.policy import build_policy, load_policy

KEY_RE = re.compile(r'id="coupon-form">\s*<input type="hidden" name="csrf_token" value="[0-9a-f]+">'
                    r'<input type="hidden" name="key" value="([A-Za-z0-9_-]+)"')


def coupons(site: ConsoleSite) -> int:
    return site.db_value("SELECT count(*) FROM coupons")[0]


def test_a_manager_issues_a_coupon_once_from_the_member_page(console_site: ConsoleSite) -> None:
    c = console_site.client()
    token = console_site.login(c, "bob")
    url = f"/console/members/{console_site.member_id}"
    page = c.get(url).text
    assert 'id="coupons"' in page and 'data-state=' not in page      # none yet
    key = KEY_RE.search(page).group(1)
    form = {"template": "welcome", "key": key, "csrf_token": token}
    assert c.post(f"{url}/coupons", data=form).status_code == 303
    assert c.post(f"{url}/coupons", data=form).status_code == 303      # a double click
    assert coupons(console_site) == 1
    assert console_site.db_value("SELECT count(*) FROM audit_log WHERE action = 'coupon.issue' "
                                 "AND actor = 'bob'")[0] == 1
    page = c.get(url, params={"lang": "en"}).text
    row = re.search(r'<tr data-state="open"><td>\d+</td><td>welcome</td>\s*<td>-5.00 / 30.00</td>',
                    page)
    assert row, page
    bad = c.post(f"{url}/coupons", data={**form, "template": "nope",
                                         "key": KEY_RE.search(page).group(1)})
    assert bad.status_code == 400 and "unknown coupon template" in bad.text
    assert c.post(f"{url}/coupons", data={"template": "welcome", "key": key}).status_code == 403
    assert coupons(console_site) == 1


def test_a_cashier_sees_coupons_but_cannot_issue(console_site: ConsoleSite) -> None:
    c = console_site.client()
    token = console_site.login(c, "alice")
    url = f"/console/members/{console_site.member_id}"
    page = c.get(url).text
    assert 'id="coupons"' in page and 'id="coupon-form"' not in page
    r = c.post(f"{url}/coupons", data={"template": "welcome", "key": "abcdefgh12",
                                       "csrf_token": token})
    assert r.status_code == 403 and coupons(console_site) == 0


def test_campaigns_page_shows_windows_and_whether_on(console_site: ConsoleSite) -> None:
    today = date.today()
    raw = load_policy().raw
    console_site.policy = build_policy({**raw, "campaigns": {
        "spring": {"starts": (today - timedelta(1)).isoformat(),
                   "ends": (today + timedelta(1)).isoformat(), "kinds": ["kiosk"],
                   "points_multiplier": 3},
        "later": {"starts": (today + timedelta(10)).isoformat(),
                  "ends": (today + timedelta(12)).isoformat(), "kinds": ["topup"],
                  "ladder": [{"min": "100.00", "bonus": "30.00"}]}}})
    c = console_site.client()
    console_site.login(c, "alice")
    assert 'href="/console/campaigns"' in c.get("/console/members").text
    page = c.get("/console/campaigns", params={"lang": "en"}).text
    assert re.search(r'<tr data-active="yes"><td>spring</td>', page)
    assert re.search(r'<tr data-active="no"><td>later</td>', page)
    assert "Points ×3" in page and "100.00 → +30.00" in page
    assert "<form" not in page.split("</header>")[1]                   # read-only
    t = console_site.client()
    console_site.login(t, "tom")
    assert t.get("/console/campaigns").status_code == 403
