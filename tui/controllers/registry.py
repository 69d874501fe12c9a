"""The models the app can switch between: slots, loading one in a worker, switching, consent.

Each slot is a spec (from the command line, the config, the picker or
``/model``) and, once loaded, its handle. Loading runs in a thread worker that
reports with ``LoadProgress``, ``ModelReady`` or ``NeedsConsent``; the app
routes those here. Hooks set by the app connect the registry to the rest
without it knowing them: ``before_switch`` (stop what uses the model now; it
returns an event to wait for before unloading), ``on_activated`` and
``on_gave_up`` (a load ended without a model).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import partial
from typing import Callable

from backends.checkpoint.consent import code_files
from backends.checkpoint.locate import locate
from backends.core.errors import RemoteCodeRefused, is_warning
from backends.core.spec import ModelSpec
from backends.generation.open import open_model
from backends.hardware.release import freeze_heap, thaw_heap

from ..messages import LoadProgress, ModelReady, NeedsConsent
from ..screens.consent import ConsentScreen
from ..screens.model_picker import Entry, ModelPicker
from ..settings import AppSettings, spec_for

#: How long a switch waits for the turn or profile step on the old model to let go of it.
SWITCH_WAIT_SECONDS = 30.0


@dataclass
class Slot:
    """One switchable model: how to load it and, once loaded, its handle."""

    name: str  # what the user typed (shown in the picker)
    spec: ModelSpec
    handle: object | None = None

    @property
    def label(self) -> str:
        return self.handle.info.label if self.handle is not None else self.spec.label


class ModelRegistry:
    """Which model answers; loading, switching and unloading."""

    def __init__(self, app, settings: AppSettings, config, status, chat) -> None:
        self.app = app
        self.settings = settings
        self.config = config
        self.status = status
        self.chat = chat
        self.slots: list[Slot] = []
        self.active: int | None = None  # the slot whose model answers
        self.loading: int | None = None  # the slot being loaded
        #: Stop whatever uses the active model; returns an event set once it let go (or None).
        self.before_switch: Callable[[], threading.Event | None] = lambda: None
        #: A model became the active one.
        self.on_activated: Callable[[Slot], None] = lambda slot: None
        #: A load ended without a model (it failed, or its code was not allowed to run).
        self.on_gave_up: Callable[[], None] = lambda: None
        #: ``c`` in the picker: compare slot N with the active model.
        self.on_compare_pick: Callable[[int], None] = lambda index: None

    # -- slots ---------------------------------------------------------------------------------

    def add(self, name: str, spec: ModelSpec) -> int:
        """The index of the slot for ``spec``, adding one when it is new."""
        for index, slot in enumerate(self.slots):
            if slot.spec == spec:
                return index
        self.slots.append(Slot(name, spec))
        return len(self.slots) - 1

    def find(self, name: str) -> int | None:
        """A slot by number (1-based), name or label."""
        if name.isdigit() and 1 <= int(name) <= len(self.slots):
            return int(name) - 1
        for index, slot in enumerate(self.slots):
            if name in (slot.name, slot.label, str(slot.spec.source)):
                return index
        return None

    @property
    def handle(self):
        return self.slots[self.active].handle if self.active is not None else None

    @property
    def current(self) -> Slot | None:
        return self.slots[self.active] if self.active is not None else None

    def names(self) -> list[str]:
        """What ``/model`` completes: slot numbers and names."""
        return [str(n + 1) for n in range(len(self.slots))] + [s.name for s in self.slots]

    def would_switch(self, index: int) -> bool:
        return not (self.active == index and self.slots[index].handle is not None)

    # -- loading and switching -----------------------------------------------------------------

    def load(self, index: int, *, keep_others: bool = False) -> None:
        """Make slot ``index`` the active model, loading it in a worker when needed; the models
        loaded before are unloaded first unless ``keep_others`` (or ``keep_loaded``) says not."""
        slot = self.slots[index]
        if not self.would_switch(index):
            self.app.notify(f"{slot.label} is already active", markup=False)
            return
        if self.loading is not None:
            self.app.notify("a model is already loading", severity="warning", markup=False)
            return
        busy = self.before_switch()
        if slot.handle is not None:
            self._activate(index)
            return
        unload = [] if self.settings.keep_loaded or keep_others else [s for i, s in enumerate(self.slots)
                                                        if i != index and s.handle is not None]
        handles = [s.handle for s in unload]
        for s in unload:
            s.handle = None
        if self.active is not None and self.slots[self.active].handle is None:
            self.active = None
        self.loading = index
        self.status.set(load=f"loading {slot.label}…")
        self.app.run_worker(partial(self._load_work, index, slot.spec, handles, busy),
                            name=f"loading {slot.label}", group="load", thread=True, exit_on_error=False)

    def _load_work(self, index: int, spec: ModelSpec, unload: list, busy: threading.Event | None) -> None:
        """In the worker thread: unload what goes, load what comes, report back."""
        if busy is not None and not busy.wait(SWITCH_WAIT_SECONDS):
            self._warn(f"the reply did not stop within {SWITCH_WAIT_SECONDS:.0f} s: the model it runs on is "
                       "kept until it does")
        if unload:
            thaw_heap()  # the old model's cycles are collected again
        for handle in unload:
            if not handle.unload(wait=SWITCH_WAIT_SECONDS):  # never frees what a thread still uses
                self._warn(f"{handle.info.label} is still in use by a step that did not stop: its memory is "
                           "given back when that step ends")

        def progress(text: str, fraction: float | None = None) -> None:
            self.app.post_message(LoadProgress(index, text, fraction))  # newest replaces older ones

        try:
            handle = open_model(spec, progress)
        except RemoteCodeRefused:
            folder = locate(spec).path
            self.app.post_message(NeedsConsent(index, str(folder), code_files(folder)))
            return
        freeze_heap()  # once per load: a full collection over torch's heap would freeze the screen
        self.app.post_message(ModelReady(index, handle))

    def _warn(self, text: str) -> None:
        """One line about the switch, from the load worker (``notify`` only posts a message)."""
        self.app.notify(text, severity="warning", timeout=15, markup=False)

    def progress(self, message: LoadProgress) -> None:
        if is_warning(message.text):  # a warning outlives the load's progress line: it stays on screen
            self.app.notify(message.text, severity="warning", timeout=15, markup=False)
        share = f" {message.fraction:.0%}" if message.fraction is not None and message.fraction < 1 else ""
        self.status.set(load=f"{message.text}{share}")

    def ready(self, message: ModelReady) -> None:
        self.slots[message.slot].handle = message.handle
        self.loading = None
        self._activate(message.slot)

    def load_failed(self) -> None:
        """The load worker raised (its one line is shown by the app)."""
        self.loading = None
        self.on_gave_up()
        if self.handle is None:
            self.status.set(model="no model loaded", family="", dtype="", quant="", device="",
                            load="F2 picks a model")
        else:
            self.status.set(load="")

    def _activate(self, index: int) -> None:
        self.active = index
        slot = self.slots[index]
        info = slot.handle.info
        self.status.set(model=info.label, family=info.family, dtype=info.dtype, quant=info.quant,
                        device=info.device, context_max=info.max_context, load="")
        self.chat.add_notice(f"model {index + 1}: {info.label} ({info.family}, {info.dtype}, {info.device})")
        self.on_activated(slot)

    def needs_consent(self, message: NeedsConsent) -> None:
        self.loading = None
        self.status.set(load="")
        slot = self.slots[message.slot]

        def answered(allow: bool | None) -> None:
            if allow:
                slot.spec = slot.spec.with_(trust_remote_code=True)
                self.load(message.slot)
            else:
                self.chat.add_notice(f"{slot.label} was not loaded: its code was not allowed to run", error=True)
                self.on_gave_up()

        self.app.push_screen(ConsentScreen(slot.label, message.folder, message.files), answered)

    def switch_to(self, name: str, quant: str | None = None) -> None:
        """Switch to a model by number, slot name, alias, path or HF id; ``quant`` (e.g. "nf4")
        loads it quantized that way, as a slot of its own."""
        self.load(self.slot_for(name, quant))

    def slot_for(self, name: str, quant: str | None = None) -> int:
        """The slot of a model by number, slot name, alias, path or HF id (added when new); with
        ``quant``, the slot of it quantized that way."""
        index = self.find(name)
        spec = self.slots[index].spec if index is not None else spec_for(name, self.settings.options, self.config)
        if quant is not None and quant != spec.quant:
            base = self.slots[index].name if index is not None else name
            return self.add(f"{base} ({quant})", spec.with_(quant=quant))
        return index if index is not None else self.add(name, spec)

    def switch_number(self, number: int) -> None:
        if number > len(self.slots):
            self.app.notify(f"there is no model {number}; press F2 to pick one", severity="warning", markup=False)
            return
        self.load(number - 1)

    def open_picker(self) -> None:
        entries = []
        for index, slot in enumerate(self.slots):
            state = ("active" if index == self.active else "loading" if index == self.loading
                     else "loaded" if slot.handle is not None else "")
            if slot.handle is not None:
                info = slot.handle.info
                weights = info.quant if info.quant != "none" else info.dtype
                detail = f"{info.label} · {info.family} · {weights} · {info.device}"
            else:
                detail = str(slot.spec.source) if slot.spec.source else "the embedded default model"
            entries.append(Entry(slot.name, detail, "slot", state))
        self.app.push_screen(ModelPicker(entries, with_catalog=not self.settings.frozen), self._picked)

    def _picked(self, pick) -> None:
        if pick is None:
            return
        if pick.compare:
            self.on_compare_pick(self.slot_for(pick.name, pick.quant))
        else:
            self.switch_to(pick.name, pick.quant)
