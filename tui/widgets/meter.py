"""The memory/load meter: GPU or CPU/RAM, a history sparkline, and what each turn cost.

A thread worker samples ``backends.telemetry`` about twice a second and posts
a :class:`Meter.Sampled` message per sample; a newer sample replaces one still
waiting in the queue, so a busy UI never falls behind. Tests and snapshots
freeze the meter with ``Meter(paused=True)`` and show chosen samples with
:meth:`Meter.feed`.
"""

from __future__ import annotations

from typing import Callable

from rich.style import Style
from rich.text import Text
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.worker import Worker, get_current_worker

from backends.core.errors import LlmTuiError
from backends.core.units import format_bytes, format_change
from backends.hardware.history import History, MemoryLog, TurnChange, TurnMemory
from backends.hardware.sampling import Sample, Sampler
from backends.server.metrics import ServerMetrics, metrics_line

from .sparkline import bar_text, level_style, sparkline, theme_style

_COMPONENTS = ("label", "muted", "status", "bar-ok", "bar-warn", "bar-full", "bar-empty", "spark", "up", "down")


def memory_of(sample: Sample) -> tuple[int | None, str]:
    """The memory figure the sparkline follows, and its name."""
    if sample.has_gpu:
        if sample.process_gpu_mem is not None:
            return sample.process_gpu_mem, "GPU (this process)"
        if sample.torch_allocated is not None:
            return sample.torch_allocated, "GPU (torch)"
        return sample.gpu_mem_used, "GPU (all processes)"
    return sample.rss, "RSS"


def turn_change_bytes(change: TurnChange) -> tuple[int | None, str]:
    """The per-turn change worth showing: torch's allocator, else GPU, else RSS."""
    if change.torch_allocated is not None:
        return change.torch_allocated, "GPU"
    if change.gpu_used is not None:
        return change.gpu_used, "GPU"
    return change.rss, "RSS"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}%"


class Meter(Widget):
    """GPU memory and utilisation per device, or process RSS, RAM and CPU without a GPU; and, for
    a model served elsewhere, what its server reports (``watch_server``)."""

    DEFAULT_CSS = """
    Meter {
        height: auto;
        padding: 0 1;
        background: $surface;
    }
    Meter > .meter--label { color: $text-muted; }
    Meter > .meter--muted { color: $text-muted; }
    Meter > .meter--status { color: $warning; }
    Meter > .meter--bar-ok { color: $success; }
    Meter > .meter--bar-warn { color: $warning; }
    Meter > .meter--bar-full { color: $error; }
    Meter > .meter--bar-empty { color: $surface-lighten-2; }
    Meter > .meter--spark { color: $accent; }
    Meter > .meter--up { color: $warning; }
    Meter > .meter--down { color: $success; }
    """

    COMPONENT_CLASSES = {f"meter--{name}" for name in _COMPONENTS}

    class Sampled(Message):
        """One telemetry sample; a newer one replaces an older one still in the queue."""

        def __init__(self, sample: Sample, gpu_status: str, meter: "Meter | None" = None,
                     server: ServerMetrics | None = None) -> None:
            super().__init__()
            self.sample = sample
            self.gpu_status = gpu_status
            self.meter = meter
            self.server = server

        @property
        def control(self) -> "Meter | None":
            return self.meter

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, Meter.Sampled)

    class SamplingFailed(Message):
        """The sampler raised; the meter stops sampling and shows ``error``."""

        def __init__(self, error: str, meter: "Meter | None" = None) -> None:
            super().__init__()
            self.error = error
            self.meter = meter

        @property
        def control(self) -> "Meter | None":
            return self.meter

    #: Set while no sampling worker runs (tests, snapshots, or when hidden).
    paused: reactive[bool] = reactive(False, init=False)

    def __init__(self, *, interval: float = 0.5, paused: bool = False, history: int = 240,
                 turn_lines: int = 3, use_nvml: bool = True, name: str | None = None,
                 id: str | None = None, classes: str | None = None, disabled: bool = False) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.interval = interval
        self.turn_lines = turn_lines
        self._use_nvml = use_nvml
        self._history = History(maxlen=history)
        self._log = MemoryLog()
        self._gpu_status = ""
        self._error: str | None = None
        self._worker: Worker | None = None
        #: A served model: its name and how to read its server's figures (sampled with the rest).
        self._server: tuple[str, Callable[[], ServerMetrics]] | None = None
        self._server_metrics: ServerMetrics | None = None
        #: The active model's prompt cache: (tokens, bytes) it keeps between turns; (0, 0): nothing kept.
        self._kept: tuple[int, int] = (0, 0)
        self.set_reactive(Meter.paused, paused)

    # -- public API ------------------------------------------------------------------
    @property
    def sample(self) -> Sample | None:
        """The latest sample shown."""
        return self._history.latest

    @property
    def history(self) -> History:
        return self._history

    @property
    def gpu_status(self) -> str:
        return self._gpu_status

    @property
    def turns(self) -> list[TurnMemory]:
        """Memory after each logged turn, oldest first (for the memory screen)."""
        return list(self._log)

    def pause(self) -> None:
        """Stop sampling; the last sample stays on screen."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def watch_server(self, label: str | None, read: Callable[[], ServerMetrics] | None) -> None:
        """Show what ``read()`` says about the server of the model ``label`` (None: no server)."""
        self._server = (label, read) if read is not None else None
        self._server_metrics = None
        self.refresh(layout=True)

    def show_kept(self, tokens: int, nbytes: int) -> None:
        """What the active model's prompt cache keeps now (0, 0: nothing)."""
        if (tokens, nbytes) != self._kept:
            self._kept = (tokens, nbytes)
            self.refresh(layout=True)

    @property
    def kept(self) -> tuple[int, int]:
        return self._kept

    def feed(self, sample: Sample, gpu_status: str | None = None, server: ServerMetrics | None = None) -> None:
        """Show ``sample`` now, as if sampled (deterministic displays for tests and snapshots)."""
        self._show(sample, self._gpu_status if gpu_status is None else gpu_status, server)

    def log_turn(self, turn_index: int, context_tokens: int) -> TurnMemory | None:
        """Record memory after turn ``turn_index`` from the latest sample; None before any sample."""
        sample = self._history.latest
        if sample is None:
            return None
        entry = self._log.record(turn_index, context_tokens, sample)
        self.refresh(layout=True)
        return entry

    # -- sampling ----------------------------------------------------------------------
    def on_mount(self) -> None:
        if not self.paused:
            self._start()

    def watch_paused(self, paused: bool) -> None:
        if paused:
            if self._worker is not None:
                self._worker.cancel()
                self._worker = None
        elif self.is_mounted:
            self._start()

    def _start(self) -> None:
        if self._worker is None or self._worker.is_finished:
            self._error = None
            self._worker = self.run_worker(self._poll, name="meter sampler", group="meter", thread=True,
                                           exclusive=True, exit_on_error=False)

    def _poll(self) -> None:
        worker = get_current_worker()
        sampler = Sampler(use_nvml=self._use_nvml)
        try:
            while not worker.is_cancelled:
                try:
                    sample = sampler.sample()
                    status = sampler.gpu_status
                except Exception as err:  # keep the app alive; say why the meter stopped
                    self.post_message(self.SamplingFailed(f"{type(err).__name__}: {err}", self))
                    return
                server = self._server
                try:
                    metrics = server[1]() if server is not None else None
                except LlmTuiError:
                    metrics = ServerMetrics()  # unreachable for now: the line says it reports nothing
                self.post_message(self.Sampled(sample, status, self, metrics))
                worker.cancelled_event.wait(self.interval)
        finally:
            sampler.close()

    def on_meter_sampled(self, message: Sampled) -> None:
        if message.control is self and not self.paused:
            self._show(message.sample, message.gpu_status, message.server)

    def on_meter_sampling_failed(self, message: SamplingFailed) -> None:
        if message.control is self:
            self._error = message.error
            self.refresh(layout=True)

    def _show(self, sample: Sample, gpu_status: str, server: ServerMetrics | None = None) -> None:
        self._history.append(sample)
        self._gpu_status = gpu_status
        if server is not None:
            self._server_metrics = server
        self.refresh(layout=True)

    # -- drawing -----------------------------------------------------------------------
    def _style(self, name: str) -> Style:
        try:
            return theme_style(self, f"meter--{name}")
        except Exception:
            return Style.null()

    def render(self) -> Text:
        width = max(self.size.width, 20)
        sample = self._history.latest
        out = Text(no_wrap=True, overflow="ellipsis", end="")
        lines: list[Text] = []
        if self._error:
            lines.append(Text(f"meter stopped: {self._error}", self._style("status")))
        if self._server is not None:
            lines.extend(self._server_lines())
        if sample is None:
            lines.append(Text("sampling…", self._style("muted")))
        else:
            lines.extend(self._gpu_lines(sample, width) if sample.has_gpu else self._cpu_lines(sample, width))
            lines.append(self._spark_line(width))
        if self._kept[0]:
            lines.append(self._kept_line())
        if sample is not None:
            lines.extend(self._turn_lines())
        for k, line in enumerate(lines):
            if k:
                out.append("\n")
            out.append_text(line)
        return out

    def _bar_line(self, label: str, used: int, total: int, width: int, suffix: str = "") -> Text:
        fraction = used / total if total else 0.0
        figures = f" {format_bytes(used)} / {format_bytes(total)}{suffix}"
        bar_width = max(4, min(30, width - len(label) - len(figures) - 1))
        style = level_style(fraction, self._style("bar-ok"), self._style("bar-warn"), self._style("bar-full"))
        line = Text(label + " ", self._style("label"), no_wrap=True, overflow="ellipsis")
        line.append_text(bar_text(fraction, bar_width, style, self._style("bar-empty")))
        line.append(figures)
        return line

    def _gpu_lines(self, sample: Sample, width: int) -> list[Text]:
        label = self._style("label")
        lines = []
        for gpu in sample.gpus:
            head = Text(f"GPU{gpu.index} ", label, no_wrap=True, overflow="ellipsis")
            head.append(gpu.name)
            head.append("  util ", label)
            head.append(_percent(gpu.util_percent))
            if gpu.process_mem is not None:
                head.append("  mine ", label)
                head.append(format_bytes(gpu.process_mem))
            lines.append(head)
            lines.append(self._bar_line("  mem", gpu.mem_used, gpu.mem_total, width))
        if sample.torch_allocated is not None:
            torch_line = Text("torch ", label, no_wrap=True, overflow="ellipsis")
            torch_line.append("alloc ", label)
            torch_line.append(format_bytes(sample.torch_allocated))
            torch_line.append("  reserved ", label)
            torch_line.append(format_bytes(sample.torch_reserved))
            torch_line.append("  peak ", label)
            torch_line.append(format_bytes(sample.torch_peak))
            lines.append(torch_line)
        host = Text("RSS ", label, no_wrap=True, overflow="ellipsis")
        host.append(format_bytes(sample.rss))
        host.append("  CPU ", label)
        host.append(_percent(sample.cpu_percent))
        lines.append(host)
        return lines

    def _cpu_lines(self, sample: Sample, width: int) -> list[Text]:
        label = self._style("label")
        status = self._gpu_status or "no GPU"
        lines = [Text(f"{status} — showing CPU/RAM", self._style("status"), no_wrap=True, overflow="ellipsis")]
        rss = Text("RSS ", label, no_wrap=True, overflow="ellipsis")
        rss.append(format_bytes(sample.rss))
        rss.append("  CPU ", label)
        rss.append(_percent(sample.cpu_percent))
        lines.append(rss)
        lines.append(self._bar_line("RAM", sample.sys_ram_used, sample.sys_ram_total, width))
        return lines

    def _server_lines(self) -> list[Text]:
        head = Text("server ", self._style("label"), no_wrap=True, overflow="ellipsis")
        head.append(self._server[0])
        metrics = self._server_metrics
        body = Text(metrics_line(metrics) if metrics is not None else "asking the server…",
                    self._style("muted") if metrics is None or metrics.empty else "", no_wrap=True,
                    overflow="ellipsis")
        return [head, body, Text("this machine:", self._style("label"))]

    def _spark_line(self, width: int) -> Text:
        latest = self._history.latest
        _, name = memory_of(latest) if latest is not None else (None, "RSS")
        values = [memory_of(s)[0] for s in self._history]
        known = [v for v in values if v is not None]
        peak = max(known) if known else None
        current = values[-1] if values else None
        tail = f" {format_bytes(current)} (peak {format_bytes(peak)})"
        head = name.split(" ")[0]
        spark_width = max(4, width - len(head) - len(tail) - 2)
        line = Text(head + " ", self._style("label"), no_wrap=True, overflow="ellipsis")
        line.append(sparkline(values, spark_width), self._style("spark"))
        line.append(tail, self._style("muted"))
        return line

    def _kept_line(self) -> Text:
        tokens, nbytes = self._kept
        line = Text("KV kept ", self._style("label"), no_wrap=True, overflow="ellipsis")
        where = format_bytes(nbytes) if nbytes else "in llama.cpp's context"
        line.append(f"{where} · {tokens:,} tokens for the next turn")
        return line

    def _turn_lines(self) -> list[Text]:
        lines = []
        count = len(self._log)
        for position in range(max(0, count - self.turn_lines), count):
            entry = self._log[position]
            change, what = turn_change_bytes(self._log.change(position))
            line = Text(f"turn {entry.turn}: ", self._style("label"), no_wrap=True, overflow="ellipsis")
            line.append(f"{entry.context_tokens:,} ctx tok, ")
            if position == 0:  # nothing before it to compare with: show the level
                line.append(f"{format_bytes(change)} {what}")
            else:
                style = self._style("up") if (change or 0) > 0 else self._style("down")
                line.append(f"{format_change(change)} {what}", style)
            lines.append(line)
        return lines

    def get_content_height(self, container, viewport, width: int) -> int:
        return self.render().plain.count("\n") + 1
