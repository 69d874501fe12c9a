"""Small text graphics: sparklines and horizontal bars, as plain strings or Rich Text.

Pure functions, no Textual: the meter, the inspector's context bar and the
memory screen draw with them, and tests call them directly.
"""

from __future__ import annotations

from typing import Sequence

from rich.style import Style
from rich.text import Text

#: Eight levels, lowest first.
LEVELS = "▁▂▃▄▅▆▇█"
BAR_FULL = "━"
BAR_HALF = "╸"


def sparkline(values: Sequence[float | int | None], width: int, *,
              lo: float | None = None, hi: float | None = None) -> str:
    """The newest ``width`` values as block characters; ``None`` is a gap (a space).

    The scale runs from ``lo`` to ``hi`` (default: the smallest and largest
    value shown). A flat series sits on the lowest level.
    """
    if width <= 0:
        return ""
    shown = list(values)[-width:]
    known = [v for v in shown if v is not None]
    if not known:
        return " " * len(shown)
    low = min(known) if lo is None else lo
    high = max(known) if hi is None else hi
    span = high - low
    top = len(LEVELS) - 1
    out = []
    for value in shown:
        if value is None:
            out.append(" ")
        elif span <= 0:
            out.append(LEVELS[0])
        else:
            level = round((min(max(value, low), high) - low) / span * top)
            out.append(LEVELS[level])
    return "".join(out)


def bar(fraction: float, width: int) -> tuple[str, str]:
    """A bar ``width`` cells wide at half-cell resolution: (filled part, empty part)."""
    if width <= 0:
        return "", ""
    fraction = min(max(fraction, 0.0), 1.0)
    halves = round(fraction * width * 2)
    full, half = divmod(halves, 2)
    filled = BAR_FULL * full + (BAR_HALF if half else "")
    return filled, BAR_FULL * (width - len(filled))


def bar_text(fraction: float, width: int, style: Style | str = "", empty_style: Style | str = "dim") -> Text:
    filled, empty = bar(fraction, width)
    text = Text(no_wrap=True, overflow="crop")
    text.append(filled, style)
    text.append(empty, empty_style)
    return text


def level_style(fraction: float, ok: Style, warn: Style, full: Style,
                thresholds: tuple[float, float] = (0.75, 0.95)) -> Style:
    """``ok`` below the first threshold, ``warn`` below the second, else ``full``."""
    if fraction < thresholds[0]:
        return ok
    if fraction < thresholds[1]:
        return warn
    return full


def theme_style(widget, component: str) -> Style:
    """A Textual widget's component-class style as a Rich Style for drawing text.

    Theme colours such as ``$text-muted`` are translucent; the foreground and
    background come from the blended (opaque) style, and only where the
    component sets them, so the drawing keeps whatever background it sits on.
    """
    partial = widget.get_component_rich_style(component, partial=True)
    blended = widget.get_component_rich_style(component)
    colors = Style(color=blended.color if partial.color is not None else None,
                   bgcolor=blended.bgcolor if partial.bgcolor is not None else None)
    return partial + colors
