"""Memory against context tokens, plotted in the terminal.

Points are the turns logged by the meter (memory after each turn); when a
profile was run (``/profile``, or ``p`` on this screen), its rows add a
peak-memory curve, a KV-cache curve on its own scale and a table under them.
The plot is drawn character by character by :func:`plot_lines` and the table
by :func:`profile_table`, pure functions that tests call directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Static

from backends.core.errors import UsageError
from backends.core.units import format_bytes
from backends.hardware.history import TurnMemory
from tui.widgets.sparkline import theme_style


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


def turn_metric(turns: Sequence[TurnMemory]) -> tuple[str, Callable[[TurnMemory], int | None]]:
    """Which memory figure the turns are plotted by: torch's allocator, GPU, else RSS."""
    if any(t.torch_allocated is not None for t in turns):
        return "GPU allocated (torch)", lambda t: t.torch_allocated
    if any(t.gpu_used is not None for t in turns):
        return "GPU used", lambda t: t.gpu_used
    return "process RSS", lambda t: t.rss


def build_series(turns: Sequence[TurnMemory], profile_rows: Sequence[dict] | None,
                 styles: dict[str, Style | str] | None = None) -> list[Series]:
    styles = styles or {}
    out: list[Series] = []
    for key, label, marker in (("peak_bytes", "profile peak", "◆"), ("kv_bytes", "KV cache", "◇")):
        points = []
        for row in profile_rows or ():
            x, y = row.get("context_tokens"), row.get(key)
            if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                points.append((float(x), float(y)))
        if points:
            out.append(Series(label, sorted(points), marker, styles.get(key, ""), connect=True,
                              extra={"key": key}))
    if turns:
        name, metric = turn_metric(turns)
        points = [(float(t.context_tokens), float(v)) for t in turns if (v := metric(t)) is not None]
        if points:
            out.append(Series(f"turns ({name})", points, "●", styles.get("turn", ""), extra={"key": "turn"}))
    return out


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


def _rate(value) -> str:
    return f"{value:,.1f}" if isinstance(value, (int, float)) else "—"


def profile_table(rows: Sequence[dict], max_rows: int = 6) -> list[str]:
    """The profile as a small table: context, peak, KV cache, KV per token, prefill
    and decode tokens/s; a row that failed (out of memory) is its context and the error.
    More rows than ``max_rows`` lines: the first, a line saying how many are left out, the last ones."""
    header = ("context", "peak", "KV cache", "KV/token", "prefill tok/s", "decode tok/s")
    cells: list[tuple[str, ...]] = [header]
    for row in rows:
        context = row.get("context_tokens")
        label = f"{context:,}" if isinstance(context, (int, float)) else "?"
        if row.get("error"):
            cells.append((label, str(row["error"])))
            continue
        kv = row.get("kv_bytes")
        per_token = row.get("kv_bytes_per_token")
        if per_token is None and isinstance(kv, (int, float)) and isinstance(context, (int, float)) and context:
            per_token = kv / context
        cells.append((label, format_bytes(row.get("peak_bytes")), format_bytes(kv), format_bytes(per_token),
                      _rate(row.get("prefill_tok_s")), _rate(row.get("decode_tok_s"))))
    skipped = 0
    if len(cells) - 1 > max(max_rows, 2):
        keep = max(max_rows, 2) - 1
        skipped = len(cells) - 1 - keep
        cells = cells[:2] + cells[len(cells) - keep + 1:]
    widths = [max(len(line[i]) for line in cells if len(line) == len(header)) for i in range(len(header))]
    lines = []
    for number, line in enumerate(cells):
        if len(line) == len(header):
            lines.append("  ".join(cell.rjust(widths[i]) for i, cell in enumerate(line)).rstrip())
        else:
            lines.append(line[0].rjust(widths[0]) + "  " + "  ".join(line[1:]))
        if number == 1 and skipped:
            lines.append("⋮".rjust(widths[0]) + f"  {skipped} more")
    return lines


class MemoryPlot(Widget):
    """Draws :func:`plot_lines` for some of the series at whatever size it is given."""

    DEFAULT_CSS = """
    MemoryPlot { height: 1fr; }
    MemoryPlot > .memory-plot--axis { color: $text-muted; }
    MemoryPlot > .memory-plot--turn { color: $accent; text-style: bold; }
    MemoryPlot > .memory-plot--peak { color: $warning; }
    MemoryPlot > .memory-plot--kv { color: $success; }
    """

    COMPONENT_CLASSES = {"memory-plot--axis", "memory-plot--turn", "memory-plot--peak", "memory-plot--kv"}

    def __init__(self, turns: Sequence[TurnMemory], profile_rows: Sequence[dict] | None = None, *,
                 keys: Sequence[str] = ("turn", "peak_bytes", "kv_bytes"), x_max: float | None = None,
                 name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.turns = list(turns)
        self.profile_rows = list(profile_rows or [])
        self.keys = tuple(keys)
        self.x_max = x_max

    def series(self) -> list[Series]:
        styles = {
            "turn": theme_style(self, "memory-plot--turn"),
            "peak_bytes": theme_style(self, "memory-plot--peak"),
            "kv_bytes": theme_style(self, "memory-plot--kv"),
        }
        return [s for s in build_series(self.turns, self.profile_rows, styles) if s.extra["key"] in self.keys]

    def render(self) -> Text:
        lines = plot_lines(self.series(), self.size.width, self.size.height, x_max=self.x_max,
                           axis_style=theme_style(self, "memory-plot--axis"))
        out = Text(no_wrap=True, overflow="crop", end="")
        for k, line in enumerate(lines):
            if k:
                out.append("\n")
            out.append_text(line)
        return out

    def legend(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        for k, s in enumerate(self.series()):
            if k:
                text.append("   ")
            text.append(s.marker, s.style)
            text.append(f" {s.label}")
        return text


class MemoryScreen(ModalScreen[None]):
    """Memory after each turn (and a profile's curves) against context tokens.

    ``p`` runs a profile with the default lengths (the app's ``start_profile``);
    while one runs, Esc stops it (the rows measured so far stay) and the next
    Esc closes.
    """

    BINDINGS = [
        Binding("escape", "close", "Close", id="memory.close"),
        Binding("p", "profile", "Run a profile", id="memory.profile"),
    ]
    #: Short terminals get the whole screen: the plots, the table and the lines under them.
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]

    DEFAULT_CSS = """
    MemoryScreen { align: center middle; }
    MemoryScreen > #memory-dialog {
        width: 90%;
        height: 85%;
        border: round $primary;
        background: $surface;
        padding: 0 1;
    }
    MemoryScreen #memory-title, MemoryScreen #memory-kv-title { text-style: bold; }
    MemoryScreen.-short > #memory-dialog { width: 100%; height: 100%; }
    MemoryScreen.-short #memory-kv-title { display: none; }
    MemoryScreen #memory-dialog > Static { text-wrap: nowrap; text-overflow: ellipsis; }
    MemoryScreen #memory-kv-plot { height: 1fr; max-height: 12; }
    MemoryScreen #memory-summary, MemoryScreen #memory-hint { color: $text-muted; }
    MemoryScreen #memory-profile { height: auto; }
    MemoryScreen #memory-progress { color: $accent; }
    MemoryScreen #memory-progress.-error { color: $error; }
    """

    def __init__(self, turns: list[TurnMemory], profile_rows: list[dict] | None = None, *,
                 profile_label: str | None = None, note: str | None = None, note_error: bool = False,
                 name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        """``turns``: TurnMemory records (a Meter, which has ``.turns``, is accepted too);
        ``profile_rows``: dicts with context_tokens, peak_bytes and kv_bytes (and the
        other columns of ``backends.profile``); ``profile_label``: the model they were
        measured on; ``note``: a line about the profile (its progress, how it ended),
        drawn as an error with ``note_error``."""
        super().__init__(name=name, id=id, classes=classes)
        self.turns = list(getattr(turns, "turns", turns))
        self.profile_rows = list(profile_rows or [])
        self.profile_label = profile_label
        self.note = note or ""
        self.note_error = note_error

    def compose(self) -> ComposeResult:
        xs = [t.context_tokens for t in self.turns]
        xs += [r["context_tokens"] for r in self.profile_rows
               if isinstance(r.get("context_tokens"), (int, float)) and not r.get("error")]
        x_max = max(xs, default=None)
        has_kv = any(isinstance(r.get("kv_bytes"), (int, float)) for r in self.profile_rows)
        title = "Memory vs context tokens"
        if self.profile_rows and self.profile_label:
            title += f" · profile of {self.profile_label}"
        with Vertical(id="memory-dialog"):
            yield Static(Text(title, no_wrap=True, overflow="ellipsis"), id="memory-title")
            yield MemoryPlot(self.turns, self.profile_rows, keys=("turn", "peak_bytes"), x_max=x_max,
                             id="memory-plot")
            if has_kv:
                # The KV cache is far smaller than the whole footprint: it gets its own scale.
                yield Static(Text("KV cache"), id="memory-kv-title")
                yield MemoryPlot(self.turns, self.profile_rows, keys=("kv_bytes",), x_max=x_max,
                                 id="memory-kv-plot")
            yield Static(Text(""), id="memory-legend")
            yield Static(Text(self.summary(), no_wrap=True, overflow="ellipsis"), id="memory-summary")
            if self.profile_rows:
                table = Text("\n".join(profile_table(self.profile_rows)), no_wrap=True, overflow="ellipsis")
                yield Static(table, id="memory-profile")
            progress = Static(Text(self.note, no_wrap=True, overflow="ellipsis"), id="memory-progress",
                              classes="-error" if self.note_error else "")
            progress.display = bool(self.note)
            yield progress
            yield Static(Text(self.hint(), no_wrap=True, overflow="ellipsis"), id="memory-hint")

    def on_mount(self) -> None:
        self._show_legend()

    def _show_legend(self) -> None:
        legend = Text(no_wrap=True, overflow="ellipsis")
        for plot in self.query(MemoryPlot):
            if legend.plain and plot.series():
                legend.append("   ")
            legend.append_text(plot.legend())
        for target in self.query("#memory-legend").results(Static):  # none while a recompose is under way
            target.update(legend)

    def summary(self) -> str:
        """Growth per context token between the first and last turn, when it can be told."""
        if len(self.turns) < 2:
            return f"{len(self.turns)} turn logged" if self.turns else "no turns logged yet"
        name, metric = turn_metric(self.turns)
        first, last = self.turns[0], self.turns[-1]
        a, b = metric(first), metric(last)
        tokens = last.context_tokens - first.context_tokens
        if a is None or b is None or tokens <= 0:
            return f"{len(self.turns)} turns logged"
        return (f"{len(self.turns)} turns: {name} {format_bytes(a)} → {format_bytes(b)} over "
                f"{tokens:,} more context tokens (≈ {format_bytes((b - a) / tokens)} per token)")

    def _profiling(self) -> bool:
        return getattr(self.app, "profiling", None) is not None

    def hint(self) -> str:
        if self._profiling():
            return "x: context tokens · Esc stop the profile (the rows so far stay)"
        return "x: context tokens · p run a profile · Esc close"

    async def show_profile(self, rows: list[dict], label: str | None, note: str | None = None, *,
                           error: bool = False) -> None:
        """Draw new profile rows (measured on ``label``); ``note`` replaces the progress line."""
        self.profile_rows = list(rows or [])
        self.profile_label = label
        if note is not None:
            self.note, self.note_error = note, error
        await self.recompose()
        self.call_after_refresh(self._show_legend)

    def show_progress(self, note: str, *, error: bool = False) -> None:
        """Replace the progress line (and the hint, which says what Esc does now)."""
        self.note, self.note_error = note, error
        if not self.is_mounted:
            return
        for progress in self.query("#memory-progress").results(Static):
            progress.update(Text(note, no_wrap=True, overflow="ellipsis"))
            progress.set_class(error, "-error")
            progress.display = bool(note)
        for hint in self.query("#memory-hint").results(Static):
            hint.update(Text(self.hint(), no_wrap=True, overflow="ellipsis"))

    def action_profile(self) -> None:
        start = getattr(self.app, "start_profile", None)
        if start is None:
            self.show_progress("profiles run in llm-tui, with a model loaded", error=True)
            return
        try:
            start("")
        except UsageError as err:
            self.show_progress(str(err), error=True)

    def action_close(self) -> None:
        stop = getattr(self.app, "stop_profile", None)
        if self._profiling() and stop is not None and stop():
            return  # the first Esc stops the profile; the screen stays to show its rows
        self.dismiss(None)
