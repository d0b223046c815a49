# Runs on CPython (pytest): the console's reports page — its three SVG charts, the CSV downloads, managers only.
"""The reports page over an in-process client (real database, Writer and rules engine):
taps made at 09:xx and 14:xx land in those bars of the taps-by-hour chart; the rates chart
shows the CLI member report's rates; each report downloads as the CLI's ``--csv`` writes it
(money in yuan, spreadsheet formulas defused); report text is escaped; only managers see
any of it; the page is in zh-CN with an English switch. ``taps_by_hour`` places taps in their local hour across a
daylight-saving change and in a half-hour time zone."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta
from importlib import resources
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from host.admin import Admin
from host.cli.app import main as cli
from host.money import format_fen
from host.rules.engine import Engine, Tap
from host.store.db import open_db
from host.store.reports import taps_by_hour
from host.web.console.i18n import ZH
from host.web.console.reports import RATES
from console_support import UID, ConsoleSite
from site_support import UID as SITE_UID
from site_support import make_site

RECT_RE = re.compile(r'<rect [^>]*data-label="([^"]*)" data-value="([^"]*)"')
CSV_NAMES = ("daily", "hours", "members", "devices")


def _bars(page: str, chart: str) -> dict[str, str]:
    """label -> value of each bar of the chart with id ``chart``."""
    svg = re.search(rf'<svg class="chart" id="{chart}".*?</svg>', page, re.S)
    assert svg, f"no chart {chart}"
    return dict(RECT_RE.findall(svg.group(0)))


def _taps(site: ConsoleSite, *times: datetime, amount_fen: int = 500) -> None:
    """Kiosk purchases by the seeded member at these site-local times (the real engine)."""
    site.devices()
    db = open_db(site.path)
    clock = SimpleNamespace(now=None)
    engine = Engine(db, site.policy, lambda: clock.now)
    try:
        for seq, when in enumerate(times, 1):
            clock.now = when
            engine.decide(Tap("kiosk-3", seq, UID, amount_fen=amount_fen))
    finally:
        db.conn.close()


def _yesterday(site: ConsoleSite, hour: int, minute: int) -> datetime:
    day = datetime.now(site.policy.tz).date() - timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=site.policy.tz)


def _manager(site: ConsoleSite):
    c = site.client()
    site.login(c, "bob")
    return c


def test_taps_at_9_and_14_are_in_those_hour_bars(console_site: ConsoleSite) -> None:
    _taps(console_site, _yesterday(console_site, 9, 5), _yesterday(console_site, 9, 50),
          _yesterday(console_site, 14, 20))
    c = _manager(console_site)
    bars = _bars(c.get("/console/reports").text, "chart-hours")
    assert list(bars) == [f"{h:02d}" for h in range(24)]
    assert {h: v for h, v in bars.items() if v != "0"} == {"09": "2", "14": "1"}
    rows = list(csv.DictReader(io.StringIO(c.get("/console/reports/hours.csv").text)))
    assert [(r["hour"], r["taps"], r["granted"]) for r in rows if r["taps"] != "0"] == [
        ("9", "2", "2"), ("14", "1", "1")]


def test_revenue_chart_shows_each_days_revenue(console_site: ConsoleSite) -> None:
    c = _manager(console_site)
    page = c.get("/console/reports").text
    bars = _bars(page, "chart-revenue")
    today = datetime.now(console_site.policy.tz).date()
    days = [(today - timedelta(days=i)).isoformat()[5:] for i in range(6, -1, -1)]
    assert bars == {**dict.fromkeys(days, "0"), days[-1]: "10000"}  # the 100.00 top-up
    assert "<title>" + days[-1] + ": 100.00</title>" in page


def test_rates_chart_equals_the_cli_member_report(console_site: ConsoleSite, capsys) -> None:
    db = open_db(console_site.path)
    try:  # a second member who does nothing: activity 1/2
        Admin(db, console_site.policy).add_member("Wang", consent_terms="t1")
    finally:
        db.conn.close()
    _taps(console_site, _yesterday(console_site, 10, 0), _yesterday(console_site, 11, 0),
          amount_fen=1000)
    db = open_db(console_site.path)
    try:
        Admin(db, console_site.policy).redeem_points(console_site.member_id, 9, item="cup")
    finally:
        db.conn.close()
    c = _manager(console_site)
    web = c.get("/console/reports/members.csv").text
    capsys.readouterr()
    assert cli(["--db", str(console_site.path), "report", "members", "--csv"]) == 0
    assert web == capsys.readouterr().out
    total = list(csv.DictReader(io.StringIO(web)))[-1]
    assert total["tier"] == "total" and total["activity_rate"] == "0.5"
    assert total["repurchase_rate"] == "1.0" and 0 < float(total["points_redemption_rate"]) < 1
    page = c.get("/console/reports").text
    assert _bars(page, "chart-rates") == {
        "Activity": "0.5", "Repurchase": "1.0",
        "Points redemption": total["points_redemption_rate"]}
    assert "50.0%" in page and "100.0%" in page


@pytest.mark.parametrize("name", CSV_NAMES)
def test_each_report_downloads_as_csv(console_site: ConsoleSite, name: str) -> None:
    when = datetime.now(console_site.policy.tz) - timedelta(minutes=5)
    _taps(console_site, when)
    spent = format_fen(10000 - console_site.db_value("SELECT principal_fen FROM members")[0])
    c = _manager(console_site)
    assert f'href="/console/reports/{name}.csv"' in c.get("/console/reports").text
    r = c.get(f"/console/reports/{name}.csv")
    assert r.status_code == 200 and r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"].startswith(f'attachment; filename="tapkiosk-{name}-')
    rows = list(csv.DictReader(io.StringIO(r.text)))
    first = r.text.splitlines()[0].split(",")
    if name == "daily":
        assert first[:4] == ["date", "topups_fen", "pass_sales_fen", "refunds_fen"]
        assert len(rows) == 7 and rows[-1]["topups_fen"] == "100.00"  # yuan, as the CLI
        day = {r["date"]: r for r in rows}[when.date().isoformat()]
        assert day["taps"] == "1" and day["consumption_fen"] == spent != "0.00"
    elif name == "hours":
        assert first == ["hour", "taps", "granted"] and len(rows) == 24
        assert [r["hour"] for r in rows if r["taps"] != "0"] == [str(when.hour)]
    elif name == "members":
        assert first[:3] == ["tier", "members", "principal_fen"]
        assert rows[-1]["tier"] == "total" and rows[-1]["active_members"] == "1"
    else:
        assert first[:3] == ["device_id", "kind", "online"]
        assert {r["device_id"]: (r["taps"], r["charged_fen"]) for r in rows} == {
            "gate-1": ("0", "0.00"), "kiosk-3": ("1", spent), "wash-2": ("0", "0.00")}
    assert c.get("/console/reports/nothing.csv").status_code == 404


def test_csv_cells_that_a_spreadsheet_would_run_are_defused(console_site: ConsoleSite) -> None:
    console_site.devices()
    db = open_db(console_site.path)
    try:
        db.execute("UPDATE devices SET last_error = ? WHERE device_id = 'gate-1'",
                   ['=HYPERLINK("http://x","y")'])
        db.conn.commit()
    finally:
        db.conn.close()
    rows = list(csv.DictReader(io.StringIO(
        _manager(console_site).get("/console/reports/devices.csv").text)))
    assert [r["last_error"] for r in rows if r["device_id"] == "gate-1"] == [
        '\'=HYPERLINK("http://x","y")']


def test_report_text_is_escaped_on_the_page(console_site: ConsoleSite) -> None:
    db = open_db(console_site.path)
    try:  # a tier the policy does not know, as an old site may hold
        db.execute("UPDATE members SET tier = ?", ["<script>alert(1)</script>"])
        db.conn.commit()
    finally:
        db.conn.close()
    page = _manager(console_site).get("/console/reports").text
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize("who", ["alice", "tom"])
def test_reports_are_for_managers_only(console_site: ConsoleSite, who: str) -> None:
    c = console_site.client()
    console_site.login(c, who)
    for url in ("/console/reports", *(f"/console/reports/{n}.csv" for n in CSV_NAMES)):
        r = c.get(url)
        assert r.status_code == 403 and "text/csv" not in r.headers["content-type"], url
    r = console_site.client().get("/console/reports/daily.csv")  # anonymous
    assert r.status_code == 303 and r.headers["location"] == "/console/login"


def test_page_is_zh_cn_with_an_english_switch(console_site: ConsoleSite) -> None:
    c = _manager(console_site)
    zh = c.get("/console/reports").text
    assert "每日营收" in zh and "分时段刷卡" in zh and "活跃率" in zh and "复购率" in zh
    en = c.get("/console/reports", params={"lang": "en"}).text
    assert "Revenue by day" in en and "Taps by hour" in en and "每日营收" not in en
    folder = resources.files("host.web.console").joinpath("templates")
    texts = {m for f in ("reports.html", "_chart.html")
             for m in re.findall(r't\("([^"]+)"\)', folder.joinpath(f).read_text())}
    texts |= {label for _, label in RATES}
    assert "Revenue by day" in texts and sorted(texts - set(ZH)) == []


def _hours_of(tz: str, *times: datetime) -> dict[int, int]:
    """Taps at ``times`` on a site in ``tz``: hour -> taps of ``taps_by_hour``."""
    db, _, engine, clock, _ = make_site(topup_fen=10000)
    for seq, when in enumerate(times, 1):
        clock.now = when
        engine.decide(Tap("K1", seq, SITE_UID, amount_fen=100))
    day = times[0].date()
    rows = taps_by_hour(db, SimpleNamespace(tz=ZoneInfo(tz)), day, 1)
    return {r["hour"]: r["taps"] for r in rows if r["taps"]}


def test_taps_by_hour_across_a_daylight_saving_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")  # 2026-03-29: 02:00 CET -> 03:00 CEST
    assert _hours_of("Europe/Berlin", datetime(2026, 3, 29, 1, 30, tzinfo=berlin),
                     datetime(2026, 3, 29, 3, 30, tzinfo=berlin),
                     datetime(2026, 3, 29, 23, 59, tzinfo=berlin),
                     datetime(2026, 3, 30, 0, 1, tzinfo=berlin)) == {1: 1, 3: 1, 23: 1}


def test_taps_by_hour_in_a_half_hour_time_zone() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")  # UTC+05:30
    assert _hours_of("Asia/Kolkata", datetime(2026, 3, 10, 9, 10, tzinfo=kolkata),
                     datetime(2026, 3, 10, 9, 55, tzinfo=kolkata),
                     datetime(2026, 3, 10, 0, 20, tzinfo=kolkata)) == {0: 1, 9: 2}
