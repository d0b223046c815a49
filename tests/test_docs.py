"""The docs tell the truth: the operator walkthrough runs as written, the backup recipe makes a
usable copy, and every relative link points at a file (and heading) that exists."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from conftest import ROOT

from host.cli import app as cli
from host.rules import policy as policy_mod

DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "host" / "README.md",
        ROOT / "protocol" / "README.md", ROOT / "deploy" / "README.md", ROOT / "DEVELOPERS.md"]


def console_blocks(path: Path) -> list[list[str]]:
    """The lines of every ```console block of a Markdown file."""
    blocks, cur = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if cur is None and line.strip() == "```console":
            cur = []
        elif cur is not None and line.strip() == "```":
            blocks.append(cur)
            cur = None
        elif cur is not None:
            cur.append(line)
    assert cur is None, f"unclosed ```console block in {path}"
    return blocks


def walkthrough(path: Path) -> list[tuple[str, list[str]]]:
    """[(command, expected output lines)] in document order."""
    steps: list[tuple[str, list[str]]] = []
    for block in console_blocks(path):
        for line in block:
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif line.strip() and line.strip() != "...":
                assert steps, f"output line before any command in {path}: {line!r}"
                steps[-1][1].append(line)
    return steps


def _norm(text: str) -> str:
    return " ".join(text.split())


def _pin_clock(monkeypatch) -> None:
    """Every command of the walkthrough reads one instant, the one it starts at: the doc's
    figures are those of commands run "at once" (a pass sold and cancelled at once refunds its
    whole price; a second later it refunds 198.99, rounded down pro rata), and a loaded
    machine may take seconds between two commands. The CLI's and the rules' clocks are
    ``datetime.now`` read in these two modules."""
    start = datetime.now().astimezone()

    class Pinned(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return start.astimezone(tz) if tz is not None else start.replace(tzinfo=None)

    monkeypatch.setattr(cli, "datetime", Pinned)
    monkeypatch.setattr(policy_mod, "datetime", Pinned)


def test_operator_walkthrough_runs_as_written(tmp_path, monkeypatch):
    steps = walkthrough(ROOT / "docs" / "operators.md")
    assert len(steps) >= 25, "the walkthrough lost its commands"
    _pin_clock(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TAPKIOSK_DB", raising=False)
    for command, expected in steps:
        argv = shlex.split(command)
        if argv[0] == "export":
            name, _, value = argv[1].partition("=")
            # The doc's path, moved into the test's directory.
            monkeypatch.setenv(name, str(tmp_path / Path(value).name))
            continue
        assert argv[0] == "tapkiosk", f"the walkthrough may only run tapkiosk: {command}"
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(argv[1:])
        assert rc == 0, f"$ {command}\nexit {rc}\n{err.getvalue()}"
        got = _norm(out.getvalue())
        pos = 0
        for want in expected:
            i = got.find(_norm(want), pos)
            assert i >= 0, f"$ {command}\nexpected (in order): {want!r}\ngot:\n{out.getvalue()}"
            pos = i + len(_norm(want))
    assert (tmp_path / "site-export.json").exists()


def test_backup_recipe_in_deploy_doc_makes_a_consistent_copy(tmp_path):
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    m = re.search(r"^\s*(python3 -c \"import sqlite3.*)$", text, re.M)
    assert m, "docs/deploy.md lost its backup one-liner"
    db = tmp_path / "site.db"
    for argv in (["init"], ["member", "add", "--consent-terms", "t1", "--name", "Ann"], ["topup", "1", "100.00"]):
        assert cli.main(["--db", str(db), *argv]) == 0
    # Take the backup while another connection holds a read transaction (as the daemon may).
    busy = sqlite3.connect(db)
    busy.execute("BEGIN")
    busy.execute("SELECT count(*) FROM ledger").fetchone()
    backup = tmp_path / "backup.db"
    cmd = shlex.split(m.group(1))
    cmd = [sys.executable if c == "python3" else c for c in cmd]
    cmd = [str(db) if c.endswith("site.db") else str(backup) if c.endswith(".db") else c
           for c in cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    busy.rollback()
    busy.close()
    assert r.returncode == 0, r.stderr
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["--db", str(backup), "member", "show", "1"]) == 0
        assert cli.main(["--db", str(backup), "verify"]) == 0
    assert "balance_fen: 100.00" in out.getvalue() or "balance: 100.00" in out.getvalue()


def _slug(heading: str) -> str:
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    out, fence = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            out.add(_slug(line.lstrip("#")))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_and_headings(doc):
    text = doc.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # links inside code are not links
    bad = []
    for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor}")
    assert not bad, f"{doc.relative_to(ROOT)}: " + "; ".join(bad)


def test_every_image_in_the_docs_exists_and_is_a_small_png():
    """Every ``![...](...)`` of the docs is a PNG under 200 KB that exists; every picture in
    docs/img/ is shown somewhere; the console walkthrough shows each page docs/screenshots.py
    takes."""
    shown = set()
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text):
            path = (doc.parent / target).resolve()
            assert path.is_file(), f"{doc.relative_to(ROOT)}: no image {target}"
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{target} is not a PNG"
            assert path.stat().st_size < 200_000, f"{target} is over 200 KB"
            shown.add(path)
    pictures = set((ROOT / "docs" / "img").glob("*.png"))
    assert pictures <= shown, f"pictures no doc shows: {sorted(p.name for p in pictures - shown)}"
    operators = (ROOT / "docs" / "operators.md").read_text(encoding="utf-8")
    for page in ("login", "dashboard", "member", "receipt", "reports", "devices", "audit"):
        assert f"](img/console-{page}.png)" in operators, page


def test_docs_name_no_machine_paths():
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for pattern in (r"/work/", r"/tmp/tapkiosk-demo-\w", r"/home/\w+"):
            assert not re.search(pattern, text), f"{doc.relative_to(ROOT)} names {pattern}"


# ---------------------------------------------------------------------------------------
# docs/technicians.md and docs/deploy.md (issue #20 items 2, 5, 9)
# ---------------------------------------------------------------------------------------
def _flash_commands(path: Path, command: str) -> list[list[str]]:
    """Every indented `python tools/flash.py COMMAND ...` example (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))
    return [shlex.split(m) for m in re.findall(rf"^\s+python tools/flash\.py ({command} .*)$", text, re.M)]


def test_technicians_provision_examples_make_a_working_reader(tmp_path, monkeypatch, capsys):
    """Each provision example in technicians.md passes the tool's checks as written (in a dry
    run): a wash example without --program or an MQTT one without a broker password would not."""
    from flash_support import make_app_tree, make_firmware
    from tools import flash

    monkeypatch.setenv("TAPKIOSK_WIFI_PASSWORD", "shop-wifi-pw")
    monkeypatch.setenv("TAPKIOSK_MQTT_PASSWORD", "reader-pw")
    fw, app = make_firmware(tmp_path / "fw.bin"), make_app_tree(tmp_path / "repo")
    examples = _flash_commands(ROOT / "docs" / "technicians.md", "provision")
    assert len(examples) >= 2 and any("mqtt" in e for e in examples)
    for argv in examples:
        argv = [str(fw) if a.startswith("ESP32_GENERIC") else a for a in argv[1:]]
        assert flash.main(["provision", *argv, "--dry-run", "--app-root", str(app)]) == 0, (
            argv, capsys.readouterr().err)


def test_mqtt_logins_fit_together():
    """daemon.toml, mosquitto.conf, deploy.md and technicians.md name the same broker users."""
    import tomllib

    from host.site.broker_acl import DAEMON_USER

    toml_text = (ROOT / "deploy" / "daemon.toml").read_text()
    assert tomllib.loads(toml_text)["mqtt_client_id"] == DAEMON_USER
    assert re.findall(r'^#?\s*mqtt_user = "([^"]+)"', toml_text, re.M) == [DAEMON_USER]
    conf = (ROOT / "deploy" / "mosquitto.conf").read_text()
    for line in ("allow_anonymous false", "acl_file /etc/mosquitto/tapkiosk.acl", "use_username_as_clientid true"):
        assert re.search(rf"^{re.escape(line)}$", conf, re.M), line
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    users = re.findall(r"^mosquitto_passwd /etc/mosquitto/tapkiosk.passwd (\S+)", deploy, re.M)
    assert users and users[0] == DAEMON_USER
    docs = "".join(p.read_text() for p in DOCS)
    # Whoever runs mosquitto_sub has it installed and logs in (the broker refuses anonymous clients).
    assert re.search(r"^apt-get install .*\bmosquitto-clients\b", deploy, re.M)
    for cmd in re.findall(r"mosquitto_sub [^`\n]*", docs):
        assert f"-u {DAEMON_USER}" in cmd and "-P" in cmd, cmd


def test_deploy_doc_keeps_secrets_from_other_users():
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    for line in ("groupadd --system tapkiosk",
                 "install -d -o tapkiosk -g tapkiosk -m 2770 /var/lib/tapkiosk /var/backups/tapkiosk",
                 "install -o root -g mosquitto -m 0640 /dev/null /etc/mosquitto/tapkiosk.passwd",
                 "install -o root -g tapkiosk -m 0640 deploy/daemon.toml /etc/tapkiosk/daemon.toml"):
        assert line in deploy, line
    assert re.search(r"^usermod -aG tapkiosk ", deploy, re.M)
    # The password file is made before mosquitto_passwd writes to it (it would create it 0644).
    assert deploy.index("/dev/null /etc/mosquitto/tapkiosk.passwd") < deploy.index("mosquitto_passwd /etc")
    # Every backup recipe runs with a umask that leaves others out.
    assert re.search(r"^umask 007; sqlite3 .*\.backup", deploy, re.M)


def _sh_block_after(path: Path, heading: str) -> list[str]:
    """The commands of the first ```sh block under ``heading`` (continuations joined,
    comments and blank lines left out)."""
    text = path.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    block = section[section.index("```sh\n") + 6:]
    block = block[:block.index("```")]
    commands, cur = [], ""
    for line in block.splitlines():
        line = line.split("  #")[0].rstrip() if not line.lstrip().startswith("#") else ""
        if not line:
            continue
        cur += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            commands.append(cur)
            cur = ""
    return commands


@pytest.mark.skipif(__import__("shutil").which("curl") is None, reason="needs curl")
def test_build_a_kiosk_curl_examples_run_against_the_real_daemon_and_firmware(rigs):
    """docs/integrators.md "Build a kiosk": each curl command, run as written (BASE pointing
    at the test daemon), answers what the comments under it say."""
    import json
    import threading
    import time

    from conftest import micropython_path
    from firmware_rig import CARD

    from host.store.db import open_db
    from host.store.tokens import add_token

    if micropython_path() is None:
        pytest.skip("needs the MicroPython unix port")
    commands = _sh_block_after(ROOT / "docs" / "integrators.md", "## Build a kiosk")
    assert commands[0].startswith("BASE=") and len(commands) == 6, commands
    rig = rigs(kind="kiosk", link="serial")
    rig.boot()
    db = open_db(rig.db)
    token = add_token(db, "docs", "sales")[1]
    db.conn.close()
    env = dict(os.environ, TOKEN=token, BASE=rig.daemon.api_url + "/v1")
    out = []
    for cmd in commands[1:]:
        if "?wait=" in cmd:   # "The member taps their card": the reader taps while curl waits
            threading.Timer(1.0, rig.tap, args=(CARD,)).start()
        r = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        out.append(json.loads(r.stdout))
        time.sleep(0.2)
    products, armed, cancelled, armed2, paid = out
    assert {"id": "coffee", "name": "Coffee 咖啡", "price_fen": 1200, "kinds": ["kiosk"]} in products["products"]
    assert (armed["id"], armed["amount_fen"], armed["state"]) == (1, 500, "armed")
    assert (cancelled["id"], cancelled["state"]) == (1, "cancelled")
    assert (armed2["id"], armed2["amount_fen"], armed2["text"]) == (2, 2400, "Pay 24.00 请刷卡")
    assert paid["state"] == "paid", rig.console()
    assert (paid["result"]["charged_fen"], paid["result"]["points_earned"]) == (2280, 22)
