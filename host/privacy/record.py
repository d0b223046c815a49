# Runs on CPython (host): a member's personal fields <-> the columns stored for them (sealed blob, masks, blind index).
"""What a member row stores for their personal fields, and how to read them back.

Personal fields: ``name``, ``phone`` (normalised), ``birthday`` (``MM-DD``), ``note`` and the
contact ``email`` (member messages). The row keeps them sealed in ``personal``; in clear only
what a front end or a tap may show without a key: the masks in ``name`` and ``phone``, and
``birth_month`` for the birthday multiplier and the birthday coupon. The e-mail's mask is kept
in ``member_contacts.email`` (host/admin/messages.py), so the outbox knows who can be mailed.
"""

from __future__ import annotations

from typing import Any

from host.privacy.mask import mask_name, mask_phone
from host.privacy.keyfile import DataKeyError
from host.privacy.vault import Vault

#: The personal fields, in the order they are shown.
FIELDS = ("name", "phone", "birthday", "note", "email")

#: The member columns holding personal data or derived from it.
COLUMNS = ("name", "phone", "birthday", "birth_month", "personal", "personal_version",
           "phone_index")

#: What an erased member's columns become.
ERASED: dict[str, Any] = {"name": "", "phone": None, "birthday": None, "birth_month": None,
                          "personal": None, "personal_version": None, "phone_index": None}


def sealed_columns(vault: Vault, member_id: int, fields: dict[str, Any]) -> dict[str, Any]:
    """The column values for ``fields`` (empty values dropped) sealed under the vault's
    current key version."""
    kept = {k: v for k, v in fields.items() if k in FIELDS and v}
    if not kept:
        return dict(ERASED)
    phone = kept.get("phone")
    bday = kept.get("birthday")
    return {"name": mask_name(kept.get("name")), "phone": mask_phone(phone), "birthday": None,
            "birth_month": int(bday[:2]) if bday else None,
            "personal": vault.seal(member_id, kept), "personal_version": vault.current,
            "phone_index": vault.phone_index(phone) if phone else None}


def personal_fields(vault: Vault | None, member_id: int, row: dict[str, Any]
                    ) -> dict[str, Any]:
    """The personal fields of a member row (``personal``, else a plain-text row that
    ``tapkiosk upgrade`` has not sealed yet)."""
    if row.get("personal") is not None:
        if vault is None:
            raise DataKeyError(f"member {member_id}'s data is sealed: the data key is needed")
        fields = vault.open(member_id, row["personal"])
    else:
        fields = {k: row.get(k) for k in ("name", "phone", "birthday")}
    return {k: fields.get(k) or None for k in FIELDS}
