# Runs on CPython (pytest): member messages (#16 G) — outbox, retries, opt-out, a real local SMTP server and webhook.
import http.server
import json
import socket
import threading

import pytest
from aiosmtpd.controller import Controller

from host.admin import Admin
from host.messages import channels, sender
from host.rules.policy import build_policy, load_policy
from site_support import make_site

# Every test of this module runs on SQLite and on PostgreSQL (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("both_backends")


class Inbox:
    """aiosmtpd handler keeping what it received."""

    def __init__(self):
        self.mails = []

    async def handle_DATA(self, server, session, envelope):
        self.mails.append((envelope.rcpt_tos, envelope.content.decode()))
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    with socket.socket() as s:                       # a free port on the loopback
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield port, inbox
    finally:
        ctl.stop()


class Hook(http.server.BaseHTTPRequestHandler):
    got: list = []
    fail = 0

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if Hook.fail:
            Hook.fail -= 1
            self.send_response(503)
        else:
            Hook.got.append(body)
            self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def webhook():
    Hook.got, Hook.fail = [], 0
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/send", Hook
    srv.shutdown()
    srv.server_close()


def site(**messages):
    db, _, engine, clock, mid = make_site()
    raw = load_policy().raw
    pol = build_policy({**raw, "messages": {**raw["messages"], **messages},
                        "coupon_rules": {**raw["coupon_rules"], "winback": "winback",
                                         "winback_days": 30}})
    return db, Admin(db, pol, clock), clock, mid


def status(db):
    return db.execute("SELECT kind, channel, status, attempts FROM messages ORDER BY id").fetchall()


def send(db, admin, clock, chans=None):
    return sender.send_due(db, admin.policy, chans or channels.for_policy(admin.policy.messages),
                           lambda: int(clock().timestamp()))


def test_receipt_by_smtp_to_a_local_server(smtp):
    port, inbox = smtp
    db, admin, clock, mid = site(channels=["email"], smtp_host="127.0.0.1", smtp_port=port)
    admin.topup(mid, 1000)                                  # no e-mail yet: nothing queued
    assert status(db) == []
    admin.set_contact(mid, email="li@example.com")
    admin.topup(mid, 2000)
    assert send(db, admin, clock) == {"sent": 1, "retried": 0, "failed": 0, "skipped": 0}
    [(to, content)] = inbox.mails
    assert to == ["li@example.com"] and "Top-up: 20.00" in content and "Balance 30.00" in content
    assert send(db, admin, clock)["sent"] == 0              # sent once


def test_webhook_retries_then_delivers_and_gives_up(webhook):
    url, hook = webhook
    db, admin, clock, mid = site(channels=["sms"], webhook_url=url, max_attempts=2)
    admin.edit_member(mid, phone="13800000000")
    hook.fail = 1
    admin.topup(mid, 1000)
    assert send(db, admin, clock)["retried"] == 1
    assert send(db, admin, clock)["sent"] == 0             # not due before retry_minutes
    clock.set(2026, 3, 10, 12, 11)
    assert send(db, admin, clock)["sent"] == 1
    assert hook.got[0]["to"] == "13800000000" and hook.got[0]["kind"] == "receipt"
    assert db.execute("SELECT DISTINCT recipient FROM messages").fetchall() == [("138****0000",)]
    hook.fail = 5
    admin.topup(mid, 1000)
    send(db, admin, clock)
    clock.set(2026, 3, 10, 13, 0)
    assert send(db, admin, clock)["failed"] == 1
    assert status(db)[-1] == ("receipt", "sms", "failed", 2)


def test_opt_out_respected_when_queueing_and_when_sending(webhook):
    url, hook = webhook
    db, admin, clock, mid = site(channels=["sms"], webhook_url=url)
    admin.edit_member(mid, phone="13800000000")
    admin.topup(mid, 1000)
    admin.set_contact(mid, opt_out=True)                    # after queueing
    assert send(db, admin, clock)["skipped"] == 1 and hook.got == []
    admin.topup(mid, 1000)                                  # while opted out: not queued
    assert len(status(db)) == 1


def test_daily_queue_birthday_winback_expiry_once(webhook):
    url, hook = webhook
    db, admin, clock, mid = site(channels=["sms"], webhook_url=url, kinds=[
        "birthday", "winback", "points_expiry"])
    admin.edit_member(mid, phone="13800000000", birthday="04-20")
    admin.topup(mid, 30000)                                 # receipts are off: not queued
    admin.sell_pass(mid, "gym_month", from_balance=True)   # earns points expiring 2027-04-01
    clock.set(2026, 4, 20, 9, 0)                            # birthday, idle 41 days
    admin.run_coupon_rules()
    assert admin.queue_messages()["queued"] == 2
    assert admin.queue_messages()["queued"] == 0
    clock.set(2027, 3, 25, 9, 0)
    assert admin.queue_messages()["queued"] >= 1
    kinds = [k for k, *_ in status(db)]
    assert kinds[:2] == ["birthday", "winback"] and "points_expiry" in kinds
    send(db, admin, clock)
    assert {m["kind"] for m in hook.got} == {"birthday", "winback", "points_expiry"}


def test_bad_message_policy_refused():
    raw = load_policy().raw
    for bad, msg in (({"channels": ["fax"]}, "messages.channels"),
                     ({"channels": ["sms"]}, "webhook_url is needed"),
                     ({"webhook_url": "ftp://x"}, "http")):
        with pytest.raises(Exception, match=msg):
            build_policy({**raw, "messages": {**raw["messages"], **bad}})


def test_messages_cli_and_bad_input(site_cli):
    run = site_cli
    run("member", "add", "--name", "A", "--consent-terms", "t1")
    assert run("messages", "contact", "1", "--email", "a@example.com", "--opt-out")[0] == 0
    assert "opt_out: False" in run("messages", "contact", "1", "--opt-in")[1]
    assert run("--json", "messages", "queue")[0] == 0
    assert json.loads(run("--json", "messages", "send")[1])["sent"] == 0
    assert run("messages", "list")[1].strip() == "(none)"
    for argv in (["messages", "contact", "1"], ["messages", "contact", "1", "--email", "x@"],
                 ["messages", "contact", "9", "--opt-out"],
                 ["messages", "contact", "1", "--opt-in", "--opt-out"],
                 ["messages", "list", "--status", "nope"]):
        before = run("export")[1]
        code, out, err = run(*argv)
        assert code == 2 and err.count("\n") == 1, (argv, err)
        assert run("export")[1] == before
