# Runs on CPython (host): secure-card policy — the site master keys in the store and the SUN check of a tap.
"""Where secure cards meet the store and the engine.

* **Site master keys** live in the site database, table ``site_keys`` (migration 4): one
  16-byte AES key per version, append-only (a rotation adds a version; cards keep the
  version they were keyed with, ``cards.key_version``). ``tapkiosk init`` creates version 1,
  ``tapkiosk site key [--rotate]`` shows or rotates it; no command prints the key itself
  (``export --with-keys`` is the backup path, like the device keys).
* **The tap check** ``check_tap(conn, policy, tap)`` runs inside the engine's tap
  transaction, before the rules: a card enrolled secure must carry a valid, fresh SUN
  message (``host.secure.sun.SunVerifier``); on a site whose ``security.mode`` is ``"sun"`` a
  plain-UID card is refused (``secure_required``); on a ``"uid"`` site it is accepted and
  the tap row says ``security = 'insecure'``. A verified counter is stored at once, so a
  SUN message is used up even when the tap is then refused for another reason (no balance).

See ``host/SECURE.md`` for the operator's view.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
from typing import Any, NamedTuple

from host.errors import Conflict, NotFound
from host.secure.sun import SunVerifier, site_card_keys

__all__ = ["SecureCheck", "check_tap", "ensure_site_key", "rotate_site_key", "site_key",
           "site_key_info", "MODES"]

log = logging.getLogger("tapkiosk.secure")

#: Values of the policy's ``security.mode``.
MODES = ("uid", "sun")

_TEXT = {
    "cloned": "Card not genuine, see staff",
    "card_replay": "Card read replayed, tap again",
    "secure_required": "Secure card required",
    "internal": "Error, see staff (site key)",
}
_VERIFIER = SunVerifier()


def card_ref(uid: str) -> str:
    """A short, stable hash of a card UID for log lines (the UID itself is the credential)."""
    return hashlib.sha256(str(uid).upper().encode()).hexdigest()[:10]


def _conn(db_or_conn: Any) -> sqlite3.Connection:
    return getattr(db_or_conn, "conn", db_or_conn)


def _fingerprint(key: bytes) -> str:
    """8 hex digits that identify a key (for comparing backups) without revealing it."""
    return hashlib.sha256(b"tapkiosk site key\x00" + key).hexdigest()[:8]


def site_key_info(db: Any) -> dict[str, Any]:
    """The current site key's ``version``, ``fingerprint`` and ``created_at``, and every
    version kept (``versions``); never the key. Raises NotFound when there is none."""
    rows = _conn(db).execute("SELECT version, key, created_at FROM site_keys "
                             "ORDER BY version").fetchall()
    if not rows:
        raise NotFound("no site key: run 'tapkiosk site key' (or 'tapkiosk init')")
    version, key, created = rows[-1]
    return {"version": version, "fingerprint": _fingerprint(bytes(key)), "created_at": created,
            "versions": [r[0] for r in rows]}


def _insert_key(conn: sqlite3.Connection, version: int, ts: int) -> None:
    conn.execute("INSERT INTO site_keys (version, key, created_at) VALUES (?, ?, ?)",
                 (version, secrets.token_bytes(16), ts))


def ensure_site_key(db: Any, ts: int) -> dict[str, Any]:
    """Create site key version 1 if the site has none (idempotent); return ``site_key_info``
    plus ``created`` (True when this call made it)."""
    conn = _conn(db)
    conn.execute("BEGIN IMMEDIATE")
    try:
        made = conn.execute("SELECT count(*) FROM site_keys").fetchone()[0] == 0
        if made:
            _insert_key(conn, 1, ts)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return {**site_key_info(db), "created": made}


def rotate_site_key(db: Any, ts: int) -> dict[str, Any]:
    """Add a new site key version (the next one, at most 255); new secure cards are keyed
    with it, enrolled cards keep theirs. Returns ``site_key_info`` plus ``created``."""
    conn = _conn(db)
    conn.execute("BEGIN IMMEDIATE")
    try:
        top = conn.execute("SELECT coalesce(max(version), 0) FROM site_keys").fetchone()[0]
        if top >= 255:
            raise Conflict("site key version 255 reached: card key versions are one byte")
        _insert_key(conn, top + 1, ts)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return {**site_key_info(db), "created": True}


def site_key(conn: Any, version: int | None = None) -> tuple[int, bytes]:
    """``(version, key)`` of site key ``version`` (default: the newest). Raises NotFound."""
    conn = _conn(conn)
    if version is None:
        row = conn.execute("SELECT version, key FROM site_keys ORDER BY version DESC "
                           "LIMIT 1").fetchone()
    else:
        row = conn.execute("SELECT version, key FROM site_keys WHERE version = ?",
                           (version,)).fetchone()
    if row is None:
        what = "no site key" if version is None else f"no site key version {version}"
        raise NotFound(f"{what}: run 'tapkiosk site key' (or 'tapkiosk init')")
    return row[0], bytes(row[1])


class SecureCheck(NamedTuple):
    """Result of ``check_tap`` (a tuple: made on every tap, cheaper than a frozen
    dataclass).

    ``reason`` is "ok" or the deny reason (``cloned``, ``card_replay``, ``secure_required``,
    ``internal``); ``note`` goes into ``taps.security``: "sun" (verified), "insecure" (plain
    UID accepted), the failure reason, or None (card unknown: nothing to check); ``text`` is
    the member-facing line for a deny; ``member_id`` the card's member (None if unknown).
    """

    reason: str
    note: str | None
    text: str = ""
    member_id: int | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the tap may go on to the rules."""
        return self.reason == "ok"


_READ = object()


def check_tap(conn: sqlite3.Connection, policy: Any, tap: Any, row: Any = _READ) -> SecureCheck:
    """Check the secure-card rules for ``tap`` inside the caller's transaction.

    Reads the card's ``member_id``, ``secure``, ``key_version``, ``sun_counter`` (``row``:
    the caller read them already in its own query, None for an unknown card); a secure card gets
    ``SunVerifier.verify`` and, when it passes, ``sun_counter`` is set to the new counter
    here (so the caller must be in its tap transaction). An offline tap (the device already
    opened) is never refused: the failure is only noted, and a valid message still moves the
    counter. Raises only for database errors.
    """
    uid = str(tap.uid).upper()
    if row is _READ:
        row = conn.execute("SELECT member_id, secure, key_version, sun_counter FROM cards "
                           "WHERE uid = ?", (uid,)).fetchone()
    if row is None:
        return SecureCheck("ok", None)
    member_id, secure, key_version, counter = row
    mode = getattr(policy, "security_mode", "uid")
    if not secure:
        if mode == "sun" and not tap.offline:
            log.warning("secure_required: plain card %s on %s (site mode sun)", card_ref(uid),
                        tap.device_id)
            return SecureCheck("secure_required", "secure_required", _TEXT["secure_required"],
                               member_id, "plain card on a sun site")
        if log.isEnabledFor(logging.INFO):   # card_ref hashes: not on every tap for nothing
            log.info("insecure tap: plain card %s on %s accepted on its UID", card_ref(uid),
                     tap.device_id)
        return SecureCheck("ok", "insecure", member_id=member_id)
    try:
        _, master = site_key(conn, key_version)
    except NotFound as e:
        log.error("secure card %s: %s", uid, e)
        return _refuse(tap, SecureCheck("internal", "internal", _TEXT["internal"], member_id,
                                        str(e)))
    keys = site_card_keys(master, bytes.fromhex(uid), key_version)
    r = _VERIFIER.verify(uid, bytes(tap.secure or b""), keys, counter)
    if r.ok:
        conn.execute("UPDATE cards SET sun_counter = ? WHERE uid = ? AND sun_counter < ?",
                     (r.counter, uid, r.counter))
        return SecureCheck("ok", "sun", member_id=member_id)
    log.warning("%s: card %s on %s seq %s: %s", r.reason, uid, tap.device_id, tap.seq, r.detail)
    return _refuse(tap, SecureCheck(r.reason, r.reason, _TEXT[r.reason], member_id, r.detail))


def _refuse(tap: Any, check: SecureCheck) -> SecureCheck:
    if tap.offline:
        return SecureCheck("ok", check.note, member_id=check.member_id, detail=check.detail)
    return check
