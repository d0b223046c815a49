# Runs on CPython (host): phone normalisation and the masked forms of names and phones shown by default.
"""Mainland mobile numbers and masks.

``normalise_phone("+86 138-0013-8000") == "13800138000"``; ``mask_phone("13800138000") ==
"138****8000"``; ``mask_name("李雷") == "李*"`` (the first character and one star, whatever
the length, so the mask does not tell the length either); ``mask_email("li@example.com") ==
"l*@e*"`` (not an address any more).
"""

from __future__ import annotations

import re

from host.errors import InputError

_MOBILE_RE = re.compile(r"1[3-9][0-9]{9}", re.ASCII)
_SEPARATORS_RE = re.compile(r"[ \-]")


def normalise_phone(phone: str) -> str:
    """A mainland mobile number as 11 digits: spaces and dashes dropped, ``+86``/``0086``
    accepted. InputError for anything else."""
    if not isinstance(phone, str):
        raise InputError(f"bad phone {phone!r}: a mainland mobile number, 11 digits")
    digits = _SEPARATORS_RE.sub("", phone.strip())
    for prefix in ("+86", "0086"):
        if digits.startswith(prefix):
            digits = digits[len(prefix):]
            break
    if not _MOBILE_RE.fullmatch(digits):
        raise InputError(f"bad phone {phone!r}: a mainland mobile number, 11 digits "
                         "starting 13-19 (+86 allowed)")
    return digits


def mask_phone(phone: str | None) -> str | None:
    """``138****8000`` (None stays None)."""
    if not phone:
        return phone
    return phone[:3] + "****" + phone[-4:] if len(phone) > 7 else "*" * len(phone)


def mask_name(name: str | None) -> str:
    """``李*``: first character and one star; ``""`` for no name."""
    return name[0] + "*" if name else ""


def mask_email(email: str | None) -> str | None:
    """``l*@e*``: the first character of each side (None or ``""`` stays as it is)."""
    if not email:
        return email
    local, _, domain = email.partition("@")
    return f"{local[:1]}*@{domain[:1]}*"
