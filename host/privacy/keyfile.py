# Runs on CPython (host): the site data key file — where it is, creating it 0600, reading and rewriting its versions.
"""The site data key lives outside the database, in a small text file::

    # tapkiosk site data key ...
    1 <base64 of 32 random bytes>
    2 <base64 of 32 random bytes>

one AES-256 key per version (1..255); the highest version seals new data, the others stay
only until ``tapkiosk datakey rotate`` has re-encrypted every row. Where:
``$TAPKIOSK_DATA_KEY_FILE`` (the systemd unit points it at its credential), else beside the
database (``site.db.key``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets

from host.errors import HostError

_HEADER = ("# tapkiosk site data key: AES-256 keys by version. Secret: keep it 0600 and back it\n"
           "# up apart from the database (a backup of the database alone cannot be read).\n")

#: Environment variable naming the key file (it wins over the default beside the database).
ENV = "TAPKIOSK_DATA_KEY_FILE"

_cache: dict[str, tuple[tuple[int, int, int], dict[int, bytes]]] = {}


class DataKeyError(HostError):
    """The data key file is missing, unreadable, malformed or not this database's key."""

    exit_code = 2


def key_path(db_file: str | None) -> str | None:
    """``$TAPKIOSK_DATA_KEY_FILE``, else ``DB.key`` beside a file database, else None."""
    env = os.environ.get(ENV)
    if env:
        return env
    return db_file + ".key" if db_file else None


def _parse(path: str, text: str) -> dict[int, bytes]:
    keys: dict[int, bytes] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            ver, b64 = line.split()
            v, key = int(ver), base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error):
            raise DataKeyError(f"data key file {path} line {n} is not 'VERSION BASE64'") from None
        if not 1 <= v <= 255 or len(key) != 32 or v in keys:
            raise DataKeyError(f"data key file {path} line {n}: bad version or key length")
        keys[v] = key
    if not keys:
        raise DataKeyError(f"data key file {path} holds no key")
    return keys


def read_keys(path: str) -> dict[int, bytes]:
    """Versions -> 32-byte keys of the file at ``path`` (re-read when the file changed, so a
    running daemon follows a rotation). DataKeyError when missing or malformed."""
    try:
        st = os.stat(path)
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        hit = _cache.get(path)
        if hit is not None and hit[0] == stamp:
            return dict(hit[1])
        with open(path, encoding="ascii") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataKeyError(f"no data key file {path}: run 'tapkiosk init' (or set "
                           f"{ENV})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataKeyError(f"cannot read data key file {path}: "
                           f"{getattr(e, 'strerror', None) or e}") from None
    keys = _parse(path, text)
    _cache[path] = (stamp, keys)
    return dict(keys)


def _text(keys: dict[int, bytes]) -> str:
    return _HEADER + "".join(f"{v} {base64.b64encode(k).decode()}\n"
                             for v, k in sorted(keys.items()))


def write_keys(path: str, keys: dict[int, bytes]) -> None:
    """Replace the file at ``path`` atomically with ``keys`` (mode 0600)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(_text(keys))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise DataKeyError(f"cannot write data key file {path}: {e.strerror}") from None
    _cache.pop(path, None)


def create(path: str) -> bool:
    """Create the key file with version 1 (mode 0600) unless it exists. True if created."""
    if os.path.exists(path):
        return False
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as e:
        raise DataKeyError(f"cannot create data key file {path}: {e.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(_text({1: secrets.token_bytes(32)}))
        f.flush()
        os.fsync(f.fileno())
    return True
