# Runs on CPython (pytest): the kiosk touch screen in a real browser (Debian's chromium via Playwright) against the real daemon and firmware.
"""Choose a product -> "tap your card" -> the simulated reader (the real firmware under
MicroPython) taps -> the page shows the result, then the menu again. Every request the page
makes goes to the daemon (no CDN). A screenshot is kept in ``tests/artefacts/kiosk/``
(gitignored)."""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest

from conftest import ROOT, micropython_path
from firmware_rig import CARD, OTHER

from host.store.db import open_db
from host.store.tokens import add_token

CHROMIUM = os.environ.get("TAPKIOSK_CHROMIUM", "/usr/bin/chromium")
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.skipif(micropython_path() is None, reason="needs the MicroPython unix port"),
    pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                       reason="needs chromium (apt-get install -y chromium)"),
]
ARTIFACTS = ROOT / "tests" / "artefacts" / "kiosk"


def test_kiosk_page_sells_a_product_and_shows_the_result(rigs) -> None:
    rig = rigs(kind="kiosk", link="serial")
    rig.boot()
    db = open_db(rig.db)
    token = add_token(db, "kiosk-1 screen", "sales")[1]
    db.execute("UPDATE devices SET settings = json_set(settings, '$.fixed_price', json('false'))"
               " WHERE device_id = ?", [rig.device_id])
    db.conn.commit()
    db.conn.close()
    base = rig.daemon.api_url
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1024, "height": 768})
            urls: list[str] = []
            page.on("request", lambda r: urls.append(r.url))
            page.goto(f"{base}/kiosk/{rig.device_id}#token={token}")
            assert "#token" not in page.url            # the token leaves the address bar
            page.locator("button.product[data-product=coffee]").click()
            page.locator("button.product[data-product=water]").click()
            assert page.locator("#total").get_attribute("data-fen") == "1500"
            mark = len(rig.board.output())
            page.locator("#pay").click()
            page.locator("#waiting").wait_for(state="visible", timeout=10_000)
            assert "请刷卡" in page.inner_text("#waiting") and "15.00" in page.inner_text("#waiting")
            assert rig.board.wait_for("Pay 15.00", 15, mark), rig.console()
            rig.tap(CARD)
            page.locator("#result[data-state=paid]").wait_for(state="visible", timeout=20_000)
            text = page.inner_text("#result")
            assert "14.25" in text and "支付成功" in text      # 95% of 15.00 (silver)
            page.screenshot(path=str(ARTIFACTS / "kiosk-paid.png"))
            page.locator("#menu").wait_for(state="visible", timeout=15_000)
            assert page.locator("#total").get_attribute("data-fen") == "0"
            # A member without balance: the reason in words, nothing charged.
            page.locator("button.product[data-product=protein]").click()
            mark = len(rig.board.output())
            page.locator("#pay").click()
            assert rig.board.wait_for("Pay 15.00", 15, mark), rig.console()
            rig.tap(OTHER)
            page.locator("#result[data-state=denied]").wait_for(state="visible", timeout=20_000)
            assert "Balance too low" in page.inner_text("#result")
            page.screenshot(path=str(ARTIFACTS / "kiosk-denied.png"))
            assert all(u.startswith(base) for u in urls), urls
        finally:
            browser.close()
    with sqlite3.connect(rig.db) as c:
        assert c.execute("SELECT sum(charged_fen) FROM taps").fetchone()[0] == 1425


def test_use_my_points_arms_the_sale_with_points_and_shows_them(rigs) -> None:
    from firmware_rig import cli
    rig = rigs(kind="kiosk", link="serial")
    rig.boot()
    db = open_db(rig.db)
    token = add_token(db, "kiosk-1 screen", "sales")[1]
    db.conn.close()
    cli(rig.db, "points", "grant", "1", "1000", "--reason", "test")
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1024, "height": 768})
            page.goto(f"{rig.daemon.api_url}/kiosk/{rig.device_id}#token={token}")
            page.locator("button.product[data-product=coffee]").click()
            toggle = page.locator("#use-points")
            toggle.click()
            assert toggle.get_attribute("aria-pressed") == "true"
            mark = len(rig.board.output())
            page.locator("#pay").click()
            assert rig.board.wait_for("Pay 12.00", 15, mark), rig.console()
            rig.tap(CARD)
            page.locator("#result[data-state=paid]").wait_for(state="visible", timeout=20_000)
            text = page.inner_text("#result")
            # 11.40 at the silver price: half (570 points) with points, 5.70 from the balance.
            assert "积分 570" in text and "5.70" in text, text
            page.locator("#menu").wait_for(state="visible", timeout=15_000)
            assert page.locator("#use-points").get_attribute("aria-pressed") == "false"
        finally:
            browser.close()
    with sqlite3.connect(rig.db) as c:
        assert c.execute("SELECT points, fen FROM tap_points").fetchall() == [(570, 570)]
        assert c.execute("SELECT points FROM sales").fetchone() == (-1,)
