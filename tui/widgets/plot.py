"""A character plot of points against context tokens, as Rich Text lines (no app needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from rich.style import Style
from rich.text import Text

from backends.core.units import format_bytes


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    marker: str = "●"
    style: Style | str = ""
    #: Join consecutive points (sorted by x) with a dotted line.
    connect: bool = False
    line: str = "·"
    extra: dict = field(default_factory=dict)


def _scale(value: float, lo: float, hi: float, cells: int) -> int:
    if cells <= 1 or hi <= lo:
        return 0
    return max(0, min(cells - 1, round((value - lo) / (hi - lo) * (cells - 1))))


def plot_lines(series: Sequence[Series], width: int, height: int, *,
               y_format: Callable[[float], str] = format_bytes, x_max: float | None = None,
               axis_style: Style | str = "") -> list[Text]:
    """A character plot of ``series`` in ``width`` × ``height`` cells: a y axis with
    three labelled ticks, an x axis from 0 to ``x_max`` (default: the largest x),
    one marker per point, dotted lines for connected series."""
    points = [p for s in series for p in s.points]
    if not points:
        return [Text("no data yet: finish a turn, or run llm-tui profile", axis_style)]
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    x_lo, x_hi = 0.0, max(max(xs), x_max or 0.0, 1.0)
    y_lo, y_hi = min(ys), max(ys)
    if y_hi <= y_lo:
        pad = max(abs(y_hi) * 0.05, 1.0)
        y_lo, y_hi = y_lo - pad, y_hi + pad
    rows = max(3, height - 2)
    tick_rows = {0: y_hi, rows // 2: y_hi - (y_hi - y_lo) * (rows // 2) / (rows - 1), rows - 1: y_lo}
    labels = {row: y_format(value) for row, value in tick_rows.items()}
    label_width = max(len(text) for text in labels.values())
    cols = max(10, width - label_width - 1)

    grid: list[list[tuple[str, Style | str]]] = [[(" ", "")] * cols for _ in range(rows)]

    def put(x: float, y: float, char: str, style: Style | str, overwrite: bool = True) -> None:
        col = _scale(x, x_lo, x_hi, cols)
        row = rows - 1 - _scale(y, y_lo, y_hi, rows)
        if overwrite or grid[row][col][0] == " ":
            grid[row][col] = (char, style)

    for s in series:
        if s.connect and len(s.points) > 1:
            ordered = sorted(s.points)
            for (x0, y0), (x1, y1) in zip(ordered, ordered[1:]):
                c0, c1 = _scale(x0, x_lo, x_hi, cols), _scale(x1, x_lo, x_hi, cols)
                for col in range(c0 + 1, c1):
                    x = x_lo + (x_hi - x_lo) * col / (cols - 1)
                    y = y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 != x0 else y0
                    put(x, y, s.line, s.style, overwrite=False)
    for s in series:
        for x, y in s.points:
            put(x, y, s.marker, s.style)

    lines = []
    for row in range(rows):
        line = Text(no_wrap=True, overflow="crop", end="")
        if row in labels:
            line.append(labels[row].rjust(label_width) + "┤", axis_style)
        else:
            line.append(" " * label_width + "│", axis_style)
        for char, style in grid[row]:
            line.append(char, style)
        lines.append(line)
    lines.append(Text(" " * label_width + "└" + "─" * cols, axis_style, no_wrap=True, overflow="crop", end=""))
    ticks = [" "] * cols
    for value, col in ((x_lo, 0), ((x_lo + x_hi) / 2, cols // 2), (x_hi, cols - 1)):
        label = f"{int(value):,}"
        start = max(0, min(cols - len(label), col - len(label) // 2))
        if col == cols - 1:
            start = max(0, cols - len(label))
        if all(c == " " for c in ticks[max(0, start - 1):start + len(label) + 1]):
            ticks[start:start + len(label)] = list(label)
    tick_line = "".join(ticks)
    lines.append(Text(" " * (label_width + 1) + tick_line, axis_style, no_wrap=True, overflow="crop", end=""))
    return lines
