# Runs on CPython (host): report rows as CSV for spreadsheets — money in yuan, formulas defused.
"""One CSV writer for every front end (``tapkiosk report ... --csv`` and the console's
downloads), so the same report is the same file wherever it is taken."""

from __future__ import annotations

import csv
from typing import Any, TextIO

from host.money import format_fen

#: A text cell starting with one of these is read as a formula by spreadsheets.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(key: str, v: Any) -> Any:
    """One CSV cell: money in yuan; text that a spreadsheet would run as a formula
    (``=``, ``+``, ``-``, ``@``, tab, CR first) prefixed with ``'`` (OWASP CSV injection)."""
    if key.endswith("_fen") and isinstance(v, int) and not isinstance(v, bool):
        return format_fen(v)
    if isinstance(v, str) and v.startswith(_FORMULA_START):
        return "'" + v
    return v


def write_csv(rows: list[dict[str, Any]], out: TextIO) -> None:
    """Rows as CSV with a header (money in yuan); nothing when empty. The columns are every
    key of any row, in first-seen order (a total row may carry more)."""
    if not rows:
        return
    fields = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: csv_cell(k, v) for k, v in r.items()})
