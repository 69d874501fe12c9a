"""Memory against context tokens, plotted in the terminal.

Points are the turns logged by the meter (memory after each turn); when a
profile was run (``/profile``, or ``p`` on this screen), its rows add a
peak-memory curve, a KV-cache curve on its own scale and a table under them.
The plot is drawn character by character by :func:`plot_lines` and the table
by :func:`profile_table`, pure functions that tests call directly.
"""

from __future__ import annotations

from typing import Callable, Sequence

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Static

from backends.core.units import format_bytes
from backends.hardware.history import TurnMemory
from backends.profile.measure import ProfileRow

from ..messages import ProfileRequested, ProfileStopRequested
from ..widgets.plot import Series, plot_lines
from ..widgets.profile_table import profile_series, profile_table
from ..widgets.sparkline import theme_style


def turn_metric(turns: Sequence[TurnMemory]) -> tuple[str, Callable[[TurnMemory], int | None]]:
    """Which memory figure the turns are plotted by: torch's allocator, GPU, else RSS."""
    if any(t.torch_allocated is not None for t in turns):
        return "GPU allocated (torch)", lambda t: t.torch_allocated
    if any(t.gpu_used is not None for t in turns):
        return "GPU used", lambda t: t.gpu_used
    return "process RSS", lambda t: t.rss


def build_series(turns: Sequence[TurnMemory], profile_rows: Sequence[ProfileRow] | None,
                 styles: dict[str, Style | str] | None = None) -> list[Series]:
    styles = styles or {}
    out = profile_series(profile_rows or (), ("peak_bytes", "kv_bytes"), styles)
    if turns:
        name, metric = turn_metric(turns)
        points = [(float(t.context_tokens), float(v)) for t in turns if (v := metric(t)) is not None]
        if points:
            out.append(Series(f"turns ({name})", points, "●", styles.get("turn", ""), extra={"key": "turn"}))
    return out


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

    def __init__(self, turns: Sequence[TurnMemory], profile_rows: Sequence[ProfileRow] | None = None, *,
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

    ``p`` asks for a profile with the default lengths (``ProfileRequested``);
    while one runs (``running``, kept by the app), Esc asks it to stop
    (``ProfileStopRequested``; the rows measured so far stay) and the next Esc closes.
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

    def __init__(self, turns: list[TurnMemory], profile_rows: list[ProfileRow] | None = None, *,
                 profile_label: str | None = None, note: str | None = None, note_error: bool = False,
                 running: bool = False, kept: tuple[int, int] = (0, 0), name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        """``turns``: TurnMemory records (a Meter, which has ``.turns``, is accepted too);
        ``profile_rows``: a profile's rows; ``profile_label``: the model they were
        measured on; ``note``: a line about the profile (its progress, how it ended),
        drawn as an error with ``note_error``; ``running``: a profile is being measured."""
        super().__init__(name=name, id=id, classes=classes)
        self.turns = list(getattr(turns, "turns", turns))
        self.profile_rows = list(profile_rows or [])
        self.profile_label = profile_label
        self.note = note or ""
        self.note_error = note_error
        self.running = running
        self.kept = kept  # (tokens, bytes) the model's prompt cache keeps for the next turn

    def compose(self) -> ComposeResult:
        xs = [t.context_tokens for t in self.turns]
        xs += [r.context_tokens for r in self.profile_rows if not r.error]
        x_max = max(xs, default=None)
        has_kv = any(r.kv_bytes is not None for r in self.profile_rows)
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
        """Growth per context token between the first and last turn, when it can be told; and
        what the prompt cache keeps for the next turn."""
        tokens, nbytes = self.kept
        if not tokens:
            return self._growth()
        where = format_bytes(nbytes) if nbytes else "in llama.cpp's context"
        return f"{self._growth()} · KV kept {where} ({tokens:,} tokens) for the next turn"

    def _growth(self) -> str:
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

    def hint(self) -> str:
        if self.running:
            return "x: context tokens · Esc stop the profile (the rows so far stay)"
        return "x: context tokens · p run a profile · Esc close"

    async def show_profile(self, rows: list[ProfileRow], label: str | None, note: str | None = None, *,
                           error: bool = False) -> None:
        """Draw new profile rows (measured on ``label``); ``note`` replaces the progress line."""
        self.profile_rows = list(rows or [])
        self.profile_label = label
        if note is not None:
            self.note, self.note_error = note, error
        await self.recompose()
        self.call_after_refresh(self._show_legend)

    def show_progress(self, note: str, *, error: bool = False, running: bool | None = None) -> None:
        """Replace the progress line (and the hint, which says what Esc does now)."""
        self.note, self.note_error = note, error
        if running is not None:
            self.running = running
        if not self.is_mounted:
            return
        for progress in self.query("#memory-progress").results(Static):
            progress.update(Text(note, no_wrap=True, overflow="ellipsis"))
            progress.set_class(error, "-error")
            progress.display = bool(note)
        for hint in self.query("#memory-hint").results(Static):
            hint.update(Text(self.hint(), no_wrap=True, overflow="ellipsis"))

    def action_profile(self) -> None:
        self.post_message(ProfileRequested(""))

    def action_close(self) -> None:
        if self.running:
            self.running = False  # the next Esc closes, even before the profile has stopped
            self.post_message(ProfileStopRequested())  # the screen stays to show the rows so far
            return
        self.dismiss(None)
