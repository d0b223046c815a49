# Runs on CPython (host): message channels — SMTP e-mail and an HTTP webhook (SMS/WeChat gateways), pluggable.
"""Delivery channels. A channel is any object with ``send(message) -> None`` that raises
``ChannelError`` when the message was not delivered (the sender retries it). ``for_policy``
builds the site's channels by name; tests and other gateways pass their own mapping."""

from __future__ import annotations

import json
import smtplib
import urllib.error
import urllib.request
from email.message import EmailMessage
from typing import NamedTuple, Protocol

from host.errors import HostError
from host.rules.policy_programme import Messages

TIMEOUT_S = 10


class ChannelError(HostError):
    """A message was not delivered (the reason is the text)."""


class Message(NamedTuple):
    """One outbox row as a channel sees it."""

    id: int
    member_id: int
    kind: str
    recipient: str
    subject: str
    body: str


class Channel(Protocol):
    """Delivers a message or raises ChannelError."""

    def send(self, m: Message) -> None: ...


class SmtpChannel:
    """E-mail through an SMTP server (plain SMTP; the site's relay handles the rest)."""

    def __init__(self, host: str, port: int, sender: str) -> None:
        self.host, self.port, self.sender = host, port, sender

    def send(self, m: Message) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = self.sender, m.recipient, m.subject
        msg.set_content(m.body)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=TIMEOUT_S) as s:
                s.send_message(msg)
        except (OSError, smtplib.SMTPException) as e:
            raise ChannelError(f"smtp {self.host}:{self.port}: {e}") from None


class WebhookChannel:
    """An HTTP POST of JSON ``{member_id, to, kind, subject, text}`` to a gateway; any 2xx
    answer is delivered."""

    def __init__(self, url: str) -> None:
        self.url = url

    def send(self, m: Message) -> None:
        data = json.dumps({"member_id": m.member_id, "to": m.recipient, "kind": m.kind,
                           "subject": m.subject, "text": m.body}, ensure_ascii=False).encode()
        req = urllib.request.Request(self.url, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
                if not 200 <= r.status < 300:
                    raise ChannelError(f"webhook answered {r.status}")
        except urllib.error.HTTPError as e:
            raise ChannelError(f"webhook answered {e.code}") from None
        except (OSError, ValueError) as e:
            raise ChannelError(f"webhook: {e}") from None


def for_policy(m: Messages) -> dict[str, Channel]:
    """The channels the policy names: ``email`` (SMTP) and ``sms`` (webhook)."""
    out: dict[str, Channel] = {}
    if "email" in m.channels:
        out["email"] = SmtpChannel(m.smtp_host, m.smtp_port, m.smtp_from)
    if "sms" in m.channels:
        out["sms"] = WebhookChannel(m.webhook_url)
    return out
