# Runs on CPython (host): calendar periods of lots and passes (month ends, durations, day starts).
"""Calendar arithmetic in the site's time zone: when an earned lot expires, when a pass sold
for a month / quarter / year ends, and where a day starts (daily caps, reports)."""

from __future__ import annotations

from datetime import datetime


def months_later_start(now: datetime, months: int) -> datetime:
    """Midnight on the first day of the month ``months + 1`` after ``now``'s month (local):
    the instant a lot earned in ``now``'s month expires after ``months`` months."""
    y, m = now.year, now.month + months + 1
    y += (m - 1) // 12
    m = (m - 1) % 12 + 1
    return now.replace(year=y, month=m, day=1, hour=0, minute=0, second=0, microsecond=0)


def add_duration(start: datetime, duration: str) -> datetime:
    """``start`` + 1 calendar month / quarter / year (day clamped to the month's end)."""
    months = {"month": 1, "quarter": 3, "year": 12}[duration]
    y, m = start.year, start.month + months
    y += (m - 1) // 12
    m = (m - 1) % 12 + 1
    day = start.day
    while True:
        try:
            return start.replace(year=y, month=m, day=day)
        except ValueError:
            day -= 1


def day_start(now: datetime) -> int:
    """Unix time of local midnight starting ``now``'s day."""
    return int(now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
