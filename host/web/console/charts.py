# Runs on CPython (host): the console's charts — the geometry of server-drawn SVG bar charts.
"""Charts are drawn on the server as inline SVG (``templates/_chart.html``): no script and no
asset to load. :func:`bar_chart` places each bar and the text it shows; the template only
writes them out (autoescaped)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

#: Above this many bars a zero shows no figure over its (empty) bar, to keep the chart legible.
_DENSE = 12


def bar_chart(labels: Sequence[str], values: Sequence[float], text: Callable[[Any], str] = str,
              *, top: float | None = None, width: int = 360, height: int = 180,
              label_every: int = 1) -> dict[str, Any]:
    """Bars of ``values`` scaled to ``top`` (default: the largest value; negatives drawn as
    nothing), each with its label under it (every ``label_every``-th one shown) and its
    figure ``text(value)`` over it and in its tooltip."""
    top = top or max([v for v in values if v > 0] or [1])
    slot = width / max(1, len(values))
    bars = []
    for i, (label, v) in enumerate(zip(labels, values)):
        h = round((height - 30) * min(max(v, 0), top) / top)
        shown = text(v)
        bars.append({"x": round(i * slot + slot * 0.15), "w": max(1, round(slot * 0.7)),
                     "y": height - 20 - h, "h": h, "tx": round(i * slot + slot / 2),
                     "label": label, "axis": label if i % label_every == 0 else "",
                     "value": v, "text": shown,
                     "above": shown if v or len(values) <= _DENSE else ""})
    return {"width": width, "height": height, "bars": bars}


def percent(rate: float) -> str:
    """A rate (0..1) as a percentage with one decimal: ``0.4167`` -> ``41.7%``."""
    return f"{rate * 100:.1f}%"
