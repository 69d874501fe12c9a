"""The model picker (F2): models from the command line, config aliases, the HF cache, the default."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on, work
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from backends.checkpoint.quantized import CHECKPOINT_METHODS
from backends.core.sanitize import visible_text
from backends.core.spec import QUANT_CHOICES
from backends.storage.catalog import list_models


#: What ``q`` cycles through: None loads as configured (command line, config alias); the
#: others quantize while loading. GPTQ/AWQ checkpoints are detected and load as they are.
def quant_picks() -> tuple[str | None, ...]:
    return (None, *[q for q in QUANT_CHOICES if q not in CHECKPOINT_METHODS])


@dataclass(frozen=True)
class Pick:
    """The picker's answer: which model, and how to quantize it (None: as configured)."""

    name: str
    quant: str | None = None
    compare: bool = False  # c: compare it with the active model (or add it to those compared)


@dataclass(frozen=True)
class Entry:
    name: str  # what selecting it loads (a MODEL argument)
    detail: str
    kind: str  # "slot", "default", "alias", "hf-cache"
    state: str = ""  # "active", "loaded", "loading", "failed"


class ModelPicker(ModalScreen[Pick | None]):
    """Returns the chosen model and quantization (a Pick), or None."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="picker.close"),
        Binding("q", "cycle_quant", "Quantization", id="picker.quant"),
        Binding("c", "compare", "Compare", id="picker.compare",
                tooltip="compare the highlighted model with the active one: each message goes to both"),
        *[Binding(str(n), f"pick({n})", f"Model {n}", show=False, id=f"picker.pick-{n}") for n in range(1, 10)],
    ]

    def __init__(self, entries: list[Entry], *, with_catalog: bool = True) -> None:
        super().__init__()
        self.entries = list(entries)
        self.with_catalog = with_catalog
        self.quant: str | None = None

    def compose(self):
        with Vertical(id="picker-body") as body:
            body.border_title = "Models — Enter or 1-9 loads, q quantization, Esc closes"
            yield OptionList(*[self._option(i, e) for i, e in enumerate(self.entries)], id="picker-list")
            yield Static(self._quant_line(), id="picker-quant")
            yield Static(Content("looking for more models…" if self.with_catalog else ""), id="picker-note")

    def _quant_line(self) -> Content:
        picks = quant_picks()
        choices = []
        for pick in picks:
            name = pick or "as configured"
            choices.append((name, "bold reverse") if pick == self.quant else (name, ""))
            choices.append(" · ")
        return Content.assemble("Load as (q): ", *choices[:-1],
                                ("\nnf4, fp4, int8: bitsandbytes while loading · int4: the checkpoint's own "
                                 "quantize() (ChatGLM, Baichuan) · GPTQ/AWQ checkpoints load as they are", "dim"))

    def action_cycle_quant(self) -> None:
        picks = quant_picks()
        self.quant = picks[(picks.index(self.quant) + 1) % len(picks)] if self.quant in picks else picks[0]
        self.query_one("#picker-quant", Static).update(self._quant_line())

    def on_mount(self) -> None:
        if self.with_catalog:
            self.find_models()

    def _option(self, index: int, entry: Entry) -> Option:
        number = f"{index + 1}" if index < 9 else " "
        state = f" [{entry.state}]" if entry.state else ""
        prompt = Content.assemble((f"{number:>2} ", "bold $accent"), (visible_text(entry.name), "bold"),
                                  (state, "italic"), "\n   ", (visible_text(entry.detail), "dim"))
        return Option(prompt, id=f"entry-{index}")

    @work(thread=True, exit_on_error=False, group="catalog")
    def find_models(self) -> list[Entry]:
        return [Entry(e.name, e.detail, e.kind) for e in list_models()]

    def on_worker_state_changed(self, event) -> None:
        from textual.worker import WorkerState

        note = self.query_one("#picker-note", Static)
        if event.state == WorkerState.SUCCESS:
            known = {e.name for e in self.entries}
            fresh = [e for e in event.worker.result if e.name not in known]
            options = self.query_one(OptionList)
            for entry in fresh:
                self.entries.append(entry)
                options.add_option(self._option(len(self.entries) - 1, entry))
            note.update(Content(""))
        elif event.state == WorkerState.ERROR:
            note.update(Content(f"could not list the model cache: {event.worker.error}"))

    @on(OptionList.OptionSelected)
    def chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(Pick(self.entries[event.option_index].name, self.quant))

    def action_compare(self) -> None:
        highlighted = self.query_one(OptionList).highlighted
        if highlighted is not None:
            self.dismiss(Pick(self.entries[highlighted].name, self.quant, compare=True))

    def action_pick(self, number: int) -> None:
        if number <= len(self.entries):
            self.dismiss(Pick(self.entries[number - 1].name, self.quant))
