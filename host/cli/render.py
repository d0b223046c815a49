# Runs on CPython (host): how `tapkiosk` prints results — JSON, aligned tables, key: value lines, CSV.
"""Output of the operator CLI. Money keys (``*_fen``) print as yuan, time keys (``ts``,
``*_at``, ``last_seen``) in the site's time zone."""

from __future__ import annotations

import json
from datetime import datetime, tzinfo
from typing import Any, TextIO

from host.csvrows import csv_cell, write_csv  # noqa: F401  (re-exported: the CLI's CSV)
from host.money import format_fen


def show(value: Any, as_json: bool, out: TextIO, tz: tzinfo) -> None:
    """``value`` (a dict or a list of dicts) as one JSON line or for people."""
    if as_json:
        out.write(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str) + "\n")
        return
    if isinstance(value, list):
        table(value, out, tz)
        return
    for k, v in value.items():
        if isinstance(v, list) and not all(isinstance(x, dict) for x in v):
            out.write(f"{k}:\n")
            out.write("".join(f"  {_one_line(str(x))}\n" for x in v) or "  (none)\n")
        elif isinstance(v, list):
            out.write(f"{k}:\n")
            table(v, out, tz, indent="  ")
        elif isinstance(v, dict):
            out.write(f"{k}:\n")
            for kk, vv in v.items():
                out.write(f"  {kk}: {human(kk, vv, tz)}\n")
        else:
            out.write(f"{k}: {human(k, v, tz)}\n")


def human(key: str, v: Any, tz: tzinfo) -> str:
    """One value for people, by its key's name."""
    if isinstance(v, bool) or not isinstance(v, int):
        return "" if v is None else _one_line(str(v))
    if key.endswith("_fen"):
        return format_fen(v)
    if key == "ts" or key.endswith("_at") or key == "last_seen":
        if v == 0:
            return "never" if key == "expires_at" else "-"
        return datetime.fromtimestamp(v, tz).strftime("%Y-%m-%d %H:%M")
    return str(v)


def _one_line(s: str) -> str:
    """``s`` with control characters (a newline in a name) shown escaped, so that one row
    stays one line."""
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def table(rows: list[dict[str, Any]], out: TextIO, tz: tzinfo, indent: str = "") -> None:
    """Rows as an aligned table (``_fen`` dropped from headings); ``(none)`` when empty."""
    if not rows:
        out.write(f"{indent}(none)\n")
        return
    cols = list(rows[0])
    cells = [[human(c, r.get(c), tz) for c in cols] for r in rows]
    heads = [c[:-4] if c.endswith("_fen") else c for c in cols]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(heads)]
    out.write(indent + "  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip() + "\n")
    for row in cells:
        out.write(indent + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")
