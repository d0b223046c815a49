# Runs on CPython (host): sealing member personal fields (AES-GCM, versioned) and the phone blind index.
"""``Vault``: the site data keys of one database.

A sealed value is ``version (1 byte) | nonce (12) | AES-256-GCM(JSON of the fields)`` with the
member id as associated data, so a ciphertext copied onto another member does not open. The
phone blind index is ``HMAC-SHA256(index key of the version, normalised phone)``, the index
key being ``HMAC-SHA256(data key, "tapkiosk phone index")``: equality search without
decrypting. ``data_keys`` in the database keeps a check value per version, so a wrong key file
is one clear error instead of look-ups that silently find nobody.

``vault_for(db)`` finds the key file of a database (``keyfile.key_path``). An in-memory
database has nothing on disk, so its key is made for the connection and kept in a TEMP table.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
from typing import Any

import sqlite_utils
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from host.privacy import keyfile
from host.privacy.keyfile import DataKeyError

_CHECK_LABEL = b"tapkiosk data key check"
_INDEX_LABEL = b"tapkiosk phone index"
_EPHEMERAL = "temp.ephemeral_data_key"


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


class Vault:
    """Data keys by version (the highest seals) and where they came from."""

    def __init__(self, keys: dict[int, bytes], source: str) -> None:
        self.keys = dict(keys)
        self.source = source
        self.current = max(self.keys)

    def check_value(self, version: int) -> bytes:
        """What ``data_keys.check_value`` holds for ``version``."""
        return _mac(self.keys[version], _CHECK_LABEL)[:16]

    def _key(self, version: int, member_id: int) -> bytes:
        key = self.keys.get(version)
        if key is None:
            raise DataKeyError(f"data key file {self.source} lacks key version {version} "
                               f"(needed by member {member_id})")
        return key

    def seal(self, member_id: int, fields: dict[str, Any]) -> bytes:
        """``fields`` sealed for member ``member_id`` under the current version."""
        nonce = secrets.token_bytes(12)
        data = json.dumps(fields, ensure_ascii=False, sort_keys=True).encode()
        aad = f"tapkiosk member {member_id}".encode()
        return bytes([self.current]) + nonce + AESGCM(self.keys[self.current]).encrypt(
            nonce, data, aad)

    def open(self, member_id: int, blob: bytes) -> dict[str, Any]:
        """The fields of a sealed value; DataKeyError when the key file cannot open it."""
        blob = bytes(blob)
        key = self._key(blob[0], member_id)
        try:
            data = AESGCM(key).decrypt(blob[1:13], blob[13:],
                                       f"tapkiosk member {member_id}".encode())
        except InvalidTag:
            raise DataKeyError(f"data key file {self.source} does not open member "
                               f"{member_id}'s data (wrong key file?)") from None
        return json.loads(data)

    def phone_index(self, phone: str, version: int | None = None) -> bytes:
        """Blind index of a normalised phone under ``version`` (default: current)."""
        v = self.current if version is None else version
        return _mac(_mac(self.keys[v], _INDEX_LABEL), phone.encode())

    def phone_indexes(self, phone: str) -> list[bytes]:
        """The phone's index under every version held (rows mid-rotation match too)."""
        return [self.phone_index(phone, v) for v in sorted(self.keys)]

    def digest(self, fields: dict[str, Any]) -> str:
        """A keyed digest of ``fields``: what the idempotency record keeps instead of them."""
        data = json.dumps(fields, ensure_ascii=False, sort_keys=True).encode()
        return _mac(_mac(self.keys[min(self.keys)], b"tapkiosk ops digest"), data).hex()[:32]


def db_file(db: sqlite_utils.Database) -> str | None:
    """The main database file of ``db`` (None when in memory)."""
    for _, name, path in db.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return path or None
    return None


def _ephemeral(conn: sqlite3.Connection) -> dict[int, bytes]:
    conn.execute(f"CREATE TABLE IF NOT EXISTS {_EPHEMERAL} (version INTEGER PRIMARY KEY, "
                 "key BLOB NOT NULL)")
    rows = conn.execute(f"SELECT version, key FROM {_EPHEMERAL}").fetchall()
    if not rows:
        key = secrets.token_bytes(32)
        conn.execute(f"INSERT INTO {_EPHEMERAL} VALUES (1, ?)", (key,))
        rows = [(1, key)]
    return {v: bytes(k) for v, k in rows}


def set_ephemeral(conn: sqlite3.Connection, keys: dict[int, bytes]) -> None:
    """Replace an in-memory database's keys (rotation of a test database)."""
    conn.execute(f"DELETE FROM {_EPHEMERAL}")
    conn.executemany(f"INSERT INTO {_EPHEMERAL} VALUES (?, ?)", sorted(keys.items()))


def vault_for(db: sqlite_utils.Database) -> Vault:
    """The checked data keys of ``db``: DataKeyError when the file is missing, or when a
    version the database still uses is absent from it or is another key."""
    path = keyfile.key_path(db_file(db))
    if path is None and not isinstance(db.conn, sqlite3.Connection):
        raise DataKeyError(f"a PostgreSQL store keeps its data keys in a file: set {keyfile.ENV}")
    if path is None:
        vault = Vault(_ephemeral(db.conn), "(in-memory database)")
    else:
        vault = Vault(keyfile.read_keys(path), path)
    for version, check in db.execute("SELECT version, check_value FROM data_keys "
                                     "WHERE retired_at IS NULL").fetchall():
        if version not in vault.keys:
            raise DataKeyError(f"data key file {vault.source} lacks key version {version} "
                               "that this database uses")
        if not hmac.compare_digest(vault.check_value(version), bytes(check)):
            raise DataKeyError(f"data key file {vault.source} is not this database's data "
                               f"key (version {version} differs)")
    return vault


def register(conn: sqlite3.Connection, vault: Vault, ts: int) -> None:
    """Record the check value of every key version the database does not know yet (inside
    the caller's write transaction)."""
    known = {r[0] for r in conn.execute("SELECT version FROM data_keys")}
    for v in sorted(vault.keys):
        if v not in known:
            conn.execute("INSERT INTO data_keys (version, check_value, created_at) "
                         "VALUES (?,?,?)", (v, vault.check_value(v), ts))
