"""Loading and switching models, the remote-code consent, and the live prompt preview.

A mixin of ``LlmTuiApp``. Loading and previews run in thread workers and
report back with ``LoadProgress``/``ModelReady``/``NeedsConsent`` and
``PreviewReady`` messages.
"""

from __future__ import annotations

import gc
import threading
from functools import partial

from textual.worker import get_current_worker

from backends.checkpoint.consent import remote_code_files
from backends.checkpoint.locate import locate
from backends.core.errors import RemoteCodeRefused
from backends.generation.open import open_model

from . import commands
from .screens.consent import ConsentScreen
from .screens.model_picker import Entry, ModelPicker
from .settings import spec_for
from .worker import (
    LoadProgress,
    ModelReady,
    NeedsConsent,
    PreviewReady,
    code_files,
    error_line,
)

PREVIEW_DELAY = 0.2  # seconds of no typing before the prompt preview is rebuilt


class ModelFlow:
    """Which model answers, and what it would be sent next."""

    # -- models --------------------------------------------------------------------------------

    def load_slot(self, index: int) -> None:
        """Make slot ``index`` the active model, loading it in a worker when needed."""
        slot = self.models.slots[index]
        if self.models.active == index and slot.handle is not None:
            self.notify(f"{slot.label} is already active", markup=False)
            return
        if self.models.loading is not None:
            self.notify("a model is already loading", severity="warning", markup=False)
            return
        busy = None
        if self.turn is not None:
            self.turn.stop_event.set()  # the load waits for the turn's thread below
            busy = self.turn.finished
        if slot.handle is not None:
            self._activate(index)
            return
        unload = [] if self.settings.keep_loaded else self.models.loaded_others(index)
        handles = [s.handle for s in unload]
        for s in unload:
            s.handle = None
        if self.models.active is not None and self.models.slots[self.models.active].handle is None:
            self.models.active = None
        self.models.loading = index
        self.status.set(state=f"loading {slot.label}…")
        self.run_worker(partial(self._load_work, index, slot.spec, handles, busy), name=f"loading {slot.label}",
                        group="load", thread=True, exit_on_error=False)

    def _load_work(self, index: int, spec, unload: list, busy: threading.Event | None) -> None:
        if busy is not None:
            busy.wait(30)  # never unload weights a turn is still using
        if unload:
            gc.unfreeze()  # let the collector see the old model's cycles again
        for handle in unload:
            handle.unload()
        def progress(text: str, fraction: float | None = None) -> None:
            self.post_message(LoadProgress(index, text, fraction))  # newest replaces older ones

        try:
            handle = open_model(spec, progress)
        except RemoteCodeRefused:

            folder = locate(spec).path
            self.post_message(NeedsConsent(index, str(folder), code_files(folder, remote_code_files(folder))))
            return
        self.post_message(ModelReady(index, handle))

    def on_load_progress(self, message: LoadProgress) -> None:
        share = f" {message.fraction:.0%}" if message.fraction is not None and message.fraction < 1 else ""
        self.status.set(state=f"{message.text}{share}")

    def on_model_ready(self, message: ModelReady) -> None:
        self.models.slots[message.slot].handle = message.handle
        self.models.loading = None
        self._activate(message.slot)

    def _activate(self, index: int) -> None:
        # Hide the long-lived heap (torch, transformers, the weights' wrappers) from
        # the cyclic collector: a full collection over it stalls the screen for
        # hundreds of milliseconds in the middle of a reply.
        gc.freeze()
        self.models.active = index
        slot = self.models.slots[index]
        info = slot.handle.info
        self.status.set(model=info.label, family=info.family, dtype=info.dtype, quant=info.quant,
                        device=info.device, context_max=info.max_context, state="")
        self.recorder.configure(model=info.label, meta={"spec": slot.spec.to_json(), "family": info.family,
                                                        "dtype": info.dtype, "quantization": info.quant,
                                                        "device": info.device})
        self.chat.add_notice(f"model {index + 1}: {info.label} ({info.family}, {info.dtype}, {info.device})")
        self.schedule_preview(now=True)

    def on_needs_consent(self, message: NeedsConsent) -> None:
        self.models.loading = None
        self.status.set(state="")
        slot = self.models.slots[message.slot]

        def answered(allow: bool | None) -> None:
            if allow:
                slot.spec = slot.spec.with_(trust_remote_code=True)
                self.load_slot(message.slot)
            else:
                self.chat.add_notice(f"{slot.label} was not loaded: its code was not allowed to run", error=True)

        self.push_screen(ConsentScreen(slot.label, message.folder, message.files), answered)

    def switch_to(self, name: str, quant: str | None = None) -> None:
        """Switch to a model by number, slot name, alias, path or HF id; ``quant`` (e.g. "nf4")
        loads it quantized that way, as a slot of its own."""
        index = self.models.find(name)
        spec = self.models.slots[index].spec if index is not None else spec_for(name, self.settings.options,
                                                                                self.config)
        if quant is not None and quant != spec.quant:
            base = self.models.slots[index].name if index is not None else name
            index = self.models.add(f"{base} ({quant})", spec.with_(quant=quant))
        elif index is None:
            index = self.models.add(name, spec)
        self.load_slot(index)

    def action_switch_model(self, number: int) -> None:
        if number > len(self.models.slots):
            self.notify(f"there is no model {number}; press F2 to pick one", severity="warning", markup=False)
            return
        self.load_slot(number - 1)

    def action_models(self) -> None:
        entries = []
        for index, slot in enumerate(self.models.slots):
            state = ("active" if index == self.models.active else "loading" if index == self.models.loading
                     else "loaded" if slot.handle is not None else "")
            if slot.handle is not None:
                info = slot.handle.info
                weights = info.quant if info.quant != "none" else info.dtype
                detail = f"{info.label} · {info.family} · {weights} · {info.device}"
            else:
                detail = str(slot.spec.source) if slot.spec.source else "the embedded default model"
            entries.append(Entry(slot.name, detail, "slot", state))
        self.push_screen(ModelPicker(entries, with_catalog=not self.settings.frozen),
                         lambda pick: self.switch_to(pick.name, pick.quant) if pick else None)

    # -- the prompt preview --------------------------------------------------------------------

    def on_text_area_changed(self) -> None:
        self.schedule_preview()

    def schedule_preview(self, now: bool = False) -> None:
        if self._preview_timer is not None:
            self._preview_timer.stop()
            self._preview_timer = None
        if self.turn is not None:
            return  # the inspector shows the prompt being answered, then what was captured
        self._preview_timer = self.set_timer(0.001 if now else PREVIEW_DELAY, self._start_preview)

    def _start_preview(self) -> None:
        handle = self.models.handle
        if handle is None or self.turn is not None:
            return  # during a turn the inspector keeps the prompt being answered
        draft = self.input.text
        messages = self.conversation.copy_messages()
        if draft.strip() and not draft.lstrip().startswith("/") or draft.lstrip().startswith("//"):
            messages.append({"role": "user", "content": commands.literal(draft)})
        self._preview_serial += 1
        self.run_worker(partial(self._preview_work, self._preview_serial, handle, messages, self.params),
                        name="preview", group="preview", thread=True, exclusive=True, exit_on_error=False)

    def _preview_work(self, serial: int, handle, messages: list[dict], params) -> None:
        if not messages:
            self.post_message(PreviewReady(serial, None, None))
            return
        try:
            view = handle.render(messages, max_new_tokens=params.max_new_tokens,
                                 max_prompt_tokens=params.max_prompt_tokens)
        except Exception as err:  # a template that rejects this conversation is worth showing
            view, error = None, error_line(err)
        else:
            error = None
        if not get_current_worker().is_cancelled:
            self.post_message(PreviewReady(serial, view, error))

    def on_preview_ready(self, message: PreviewReady) -> None:
        if message.serial != self._preview_serial:
            return
        self.inspector.show_preview(message.view, message.error)
        if message.view is not None:
            self.status.set(context_used=len(message.view.ids), context_max=message.view.max_context
                            or self.status.info.context_max)
