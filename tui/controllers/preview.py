"""The live prompt preview: what the next turn would send, rebuilt in a worker as the user types."""

from __future__ import annotations

from functools import partial
from typing import Callable

from textual.worker import get_current_worker

from backends.core.errors import error_line
from backends.prompt.cancel import RenderCancelled

from .. import commands
from ..messages import PreviewReady
from .registry import ModelRegistry
from .turns import Turns

PREVIEW_DELAY = 0.2  # seconds of no typing before the prompt preview is rebuilt


class PromptPreview:
    """Debounces edits, renders the draft conversation off the UI thread, shows the newest result."""

    def __init__(self, app, models: ModelRegistry, turns: Turns, *, prompt_input, inspector, status) -> None:
        self.app = app
        self.models = models
        self.turns = turns
        self.input = prompt_input
        self.inspector = inspector
        self.status = status
        self._timer = None
        self._serial = 0
        #: Compare mode (set by the app): the (label, handle) of each compared model, or None.
        self.compared: Callable[[], list | None] = lambda: None
        #: True while something else shows its prompts in the inspector (a compared turn runs).
        self.paused: Callable[[], bool] = lambda: False
        #: The tool schemas a handle is offered (set by the app; None: none).
        self.tools_for: Callable = lambda handle: None

    def schedule(self, now: bool = False) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self.turns.turn is not None or self.paused():
            return  # the inspector shows the prompt being answered, then what was captured
        self._timer = self.app.set_timer(0.001 if now else PREVIEW_DELAY, self._start)

    def _start(self) -> None:
        handle = self.models.handle
        if handle is None or self.turns.turn is not None or self.paused():
            return  # during a turn the inspector keeps the prompt being answered
        draft = self.input.text
        messages = self.turns.conversation.copy_messages()
        if draft.strip() and not draft.lstrip().startswith("/") or draft.lstrip().startswith("//"):
            messages.append({"role": "user", "content": commands.literal(draft)})
        self._serial += 1
        compared = self.compared()
        tools = None if compared else self.tools_for(handle)
        self.app.run_worker(partial(self._work, self._serial, handle, messages, self.turns.params, compared, tools),
                            name="preview", group="preview", thread=True, exclusive=True, exit_on_error=False)

    def _work(self, serial: int, handle, messages: list[dict], params, compared: list | None = None,
              tools: list[dict] | None = None) -> None:
        if not messages:
            self.app.post_message(PreviewReady(serial, None, None))
            return
        worker = get_current_worker()
        try:
            # exclusive=True cancels this worker when a newer preview starts, but a thread runs
            # on regardless: the render itself watches the event and stops at its next check.
            handles = [h for _, h in compared] if compared else [handle]  # compare mode: every model's prompt
            more = {"tools": tools} if tools else {}
            views = [h.render(messages, max_new_tokens=params.max_new_tokens,
                              max_prompt_tokens=params.max_prompt_tokens, cancel=worker.cancelled_event, **more)
                     for h in handles]
            view = views[0]
        except RenderCancelled:
            return  # a newer preview is on its way
        except Exception as err:  # a template that rejects this conversation is worth showing
            view, error = None, error_line(err)
        else:
            error = None
        if not worker.is_cancelled:
            together = ([label for label, _ in compared], views) if compared and view is not None else None
            self.app.post_message(PreviewReady(serial, view, error, together))

    def ready(self, message: PreviewReady) -> None:
        if message.serial != self._serial:
            return
        if message.compared is not None:
            self.inspector.show_compared(*message.compared)
        else:
            self.inspector.hide_compared()
            self.inspector.show_preview(message.view, message.error)
        if message.view is not None:
            self.status.set(context_used=len(message.view.ids), context_max=message.view.max_context
                            or self.status.info.context_max)
