# Runs on CPython (docs tool): `make screenshots` — the staff console's pages, from a running demo site, as PNGs in docs/img/.
"""Screenshots of the staff console for docs/operators.md.

Starts ``tapkiosk demo --stay`` (the real daemon, three simulated readers running the real
firmware, the console), adds a cashier and a technician account to its site, and drives
Debian's chromium through Playwright in the console's default language (zh-CN): the login
page, the dashboard with a live tap, a member page, a top-up receipt, the reports, the device
page and the audit log. Each page is one 1200x800 viewport PNG in ``docs/img/``
(``console-<page>.png``), passed through ``optipng`` or ``oxipng`` when one is installed.

    python docs/screenshots.py [--out DIR] [--lang zh-CN|en]

Exit 0 when every picture was written; 1 (one line on stderr) otherwise. The demo and its
site are gone afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.demo import ANN  # noqa: E402

VIEWPORT = {"width": 1200, "height": 800}
PAGES = ("login", "dashboard", "member", "receipt", "reports", "devices", "audit")
PASSWORD = "docs-front-desk"
#: Accounts added to the demo site: the demo itself makes the manager.
STAFF = {"lan": "cashier", "wu": "technician"}


class ShotError(Exception):
    """The screenshots could not be made (the demo did not start, a page did not load)."""


def start_demo(log: Path) -> tuple[subprocess.Popen, dict[str, Any]]:
    """``tapkiosk demo --stay --json``; returns the process and its summary line."""
    proc = subprocess.Popen([sys.executable, "-m", "sim.demo", "--stay", "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=log.open("wb"), text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        row = json.loads(line)
        if row.get("summary"):
            if not row.get("ok") or not row.get("console_url"):
                stop_demo(proc)
                raise ShotError(f"the demo did not run cleanly; its log: {log}")
            return proc, row
    stop_demo(proc)
    raise ShotError(f"the demo stopped before serving the console; its log: {log}")


def stop_demo(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def add_staff(db: Path) -> None:
    from host.store.db import open_db
    from host.store.staff import add_staff as add

    conn = open_db(db)
    try:
        for name, role in STAFF.items():
            add(conn, name, role, PASSWORD, actor="cli:docs")
    finally:
        conn.conn.close()


def site_zone() -> str:
    from host.rules.policy import load_policy

    return str(load_policy().tz)


def optimise(png: Path) -> None:
    for tool, args in (("oxipng", ["-o", "4", "--strip", "safe", "-q"]),
                       ("optipng", ["-o2", "-strip", "all", "-quiet"])):
        if shutil.which(tool):
            subprocess.run([tool, *args, str(png)], check=False)
            return


class Shots:
    """One browser; a page per staff member; one PNG per console page."""

    def __init__(self, browser: Any, console: str, out: Path, lang: str, tz: str) -> None:
        self.browser, self.console, self.out, self.lang = browser, console.rstrip("/"), out, lang
        self.tz = tz    # the site's zone: the live feed's times match the server's

    def page(self, name: str | None = None, password: str = PASSWORD) -> Any:
        page = self.browser.new_page(viewport=VIEWPORT, locale=self.lang,
                                     timezone_id=self.tz)
        page.goto(f"{self.console}/login?lang={self.lang}")
        if name is not None:
            page.fill("input[name=name]", name)
            page.fill("input[name=password]", password)
            page.click("form button[type=submit]")
            page.wait_for_selector("#logout")
        return page

    def shot(self, page: Any, name: str) -> None:
        path = self.out / f"console-{name}.png"
        page.screenshot(path=str(path))
        optimise(path)
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "
              f"{path.stat().st_size // 1024} KiB")


def take(shots: Shots, demo: dict[str, Any], db: Path) -> None:
    """Every picture of :data:`PAGES`."""
    base = shots.console
    shots.shot(shots.page(), "login")

    manager = shots.page(*demo["console_login"])
    manager.wait_for_selector("#feed[data-ready='1']", state="attached")
    subprocess.run([sys.executable, "-m", "sim.cli", "tap", "gate-1", ANN, "--db", str(db)],
                   cwd=ROOT, check=True, capture_output=True, timeout=60)
    manager.wait_for_selector("#feed li", timeout=10_000)
    shots.shot(manager, "dashboard")

    cashier = shots.page("lan")
    cashier.goto(f"{base}/members?q=Ben")
    cashier.click("#results a.member-link")
    cashier.wait_for_selector("#member-name")
    shots.shot(cashier, "member")
    cashier.fill("#topup-form input[name=receipt]", "R-2001")
    cashier.fill("#topup-form input[name=amount]", "50.00")
    cashier.click("#topup-form button")
    cashier.wait_for_selector("#receipt")
    shots.shot(cashier, "receipt")

    manager.goto(f"{base}/reports")
    manager.wait_for_selector("svg.chart")
    shots.shot(manager, "reports")

    tech = shots.page("wu")
    tech.goto(f"{base}/devices")
    tech.click("#device-gate-1 .push-form button")
    tech.wait_for_selector("#cfg-version")
    shots.shot(tech, "devices")

    manager.goto(f"{base}/audit")
    manager.wait_for_selector("tr.audit-row")
    shots.shot(manager, "audit")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="docs/screenshots.py", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    p.add_argument("--lang", choices=("zh-CN", "en"), default="zh-CN")
    a = p.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("screenshots: error: chromium is not installed (apt-get install chromium)",
              file=sys.stderr)
        return 1
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    a.out.mkdir(parents=True, exist_ok=True)
    log = Path(tempfile.mkstemp(prefix="tapkiosk-screenshots-", suffix=".log")[1])
    proc = None
    try:
        proc, demo = start_demo(log)
        db = Path(demo["site"]) / "site.db"
        add_staff(db)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                shots = Shots(browser, demo["console_url"], a.out, a.lang, site_zone())
                take(shots, demo, db)
            finally:
                browser.close()
    except (ShotError, PlaywrightError, subprocess.SubprocessError, OSError) as e:
        print(f"screenshots: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        if proc is not None:
            stop_demo(proc)
    log.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
